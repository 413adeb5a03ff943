"""Typed keys for the objects the app shares with its handlers."""

from aiohttp import web

from gateway.audit import AuditLog
from gateway.centers import CenterRegistry
from gateway.computing_power import PowerService
from gateway.config import LoadedConfig
from gateway.evaluation.service import EvaluationService
from gateway.events import EventBus
from gateway.health import HealthMonitor
from gateway.keyring import Keyring
from gateway.poller import Poller
from gateway.service import JobService
from gateway.store import JobStore
from gateway.tokens import TokenIssuer, TokenVerifier
from gateway.transfers import TransferService
from gateway.vault import Vault

CONFIG = web.AppKey("config", LoadedConfig)
STORE = web.AppKey("store", JobStore)
CENTERS = web.AppKey("centers", CenterRegistry)
SERVICE = web.AppKey("service", JobService)
POLLER = web.AppKey("poller", Poller)
VAULT = web.AppKey("vault", Vault)
KEYRING = web.AppKey("keyring", Keyring)
ISSUER = web.AppKey("issuer", TokenIssuer)
VERIFIER = web.AppKey("verifier", TokenVerifier)
AUDIT = web.AppKey("audit", AuditLog)
TRANSFERS = web.AppKey("transfers", TransferService)
POWER = web.AppKey("power", PowerService)
EVALUATIONS = web.AppKey("evaluations", EvaluationService)
EVENTS = web.AppKey("events", EventBus)
HEALTH = web.AppKey("health", HealthMonitor)
