"""Path confinement: what is refused before anything reaches a center."""

from __future__ import annotations

import pytest

from adapters.files.paths import PathRefused, check_real, confine, expand_root, within
from gateway.errors import DomainError
from gateway.http.errors import status_of
from gateway.http.routes.files import byte_range

ROOTS = ["/home/alice", "/scratch/alice"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data/in.bin", "/home/alice/data/in.bin"),
        (".", "/home/alice"),
        ("./a//b/", "/home/alice/a/b"),
        ("/home/alice", "/home/alice"),
        ("/scratch/alice/run 1/out", "/scratch/alice/run 1/out"),
        ("//home/alice/x", "/home/alice/x"),
        ("名前.txt", "/home/alice/名前.txt"),
    ],
)
def test_paths_inside_the_roots_resolve_to_absolute_paths(path: str, expected: str) -> None:
    assert confine(path, ROOTS) == expected


@pytest.mark.parametrize(
    "path",
    [
        "",
        "..",
        "../bob",
        "a/../../etc/passwd",
        "/home/alice/../bob",
        "/etc/passwd",
        "/home/alice2/x",
        "/home",
        "/",
        "/scratch",
        "~bob/x",
        "~",
        "a\0b",
        "a\nb",
        "..\\..\\etc\\passwd",
        "x" * 256,
        "a/" * 2100,
    ],
)
def test_paths_outside_the_roots_or_malformed_are_refused(path: str) -> None:
    with pytest.raises(PathRefused) as refused:
        confine(path, ROOTS)
    assert refused.value.field == "path"
    # A well-formed absolute path outside every root is "outside" (403), not malformed.
    assert refused.value.outside == (path.startswith("/") and ".." not in path.split("/"))


def test_refusal_names_the_field_it_came_from() -> None:
    with pytest.raises(PathRefused) as refused:
        confine("../x", ROOTS, "destination.path")
    assert refused.value.field == "destination.path"
    assert str(refused.value).startswith("destination.path:")


def test_real_location_through_a_link_outside_the_roots_is_refused() -> None:
    check_real("/home/alice/data", ROOTS, "data")
    with pytest.raises(PathRefused) as refused:
        check_real("/etc", ROOTS, "link")
    assert refused.value.outside


def test_roots_expand_home_and_login() -> None:
    assert expand_root("{home}", home="/home/alice", login="alice") == "/home/alice"
    assert expand_root("/scratch/{login}/", home="/h", login="alice") == "/scratch/alice"
    with pytest.raises(ValueError):
        expand_root("rel/{login}", home="/h", login="alice")


def test_within_does_not_match_a_sibling_with_the_same_prefix() -> None:
    assert within("/home/alice/x", "/home/alice")
    assert not within("/home/alice2", "/home/alice")
    assert within("/anything", "/")


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-", 10, (0, 10)),
        ("bytes=4-", 10, (4, 10)),
        ("bytes=2-5", 10, (2, 6)),
        ("bytes=2-500", 10, (2, 10)),
        ("bytes=-3", 10, (7, 10)),
        # END before START: an invalid range, ignored (RFC 9110 14.2): the whole file.
        ("bytes=5-2", 10, None),
        ("bytes=70709403-15504431", 10, None),
    ],
)
def test_byte_ranges_are_read_as_rfc_9110_says(
    header: str | None, size: int, expected: tuple[int, int] | None
) -> None:
    assert byte_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("bytes=10-", 416),
        ("bytes=0-", 416),
        ("items=0-1", 400),
        ("bytes=0-1,4-5", 400),
        ("bytes=-", 400),
    ],
)
def test_bad_or_unsatisfiable_ranges_are_refused_naming_range(header: str, status: int) -> None:
    size = 0 if header == "bytes=0-" else 10
    with pytest.raises(DomainError) as refused:
        byte_range(header, size)
    assert status_of(refused.value) == status
    assert refused.value.field == "Range"
