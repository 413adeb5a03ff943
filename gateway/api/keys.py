"""Typed keys for the objects the app shares with its handlers."""

from aiohttp import web

from gateway.centers import CenterRegistry
from gateway.config import LoadedConfig
from gateway.poller import Poller
from gateway.service import JobService
from gateway.store import JobStore

CONFIG = web.AppKey("config", LoadedConfig)
STORE = web.AppKey("store", JobStore)
CENTERS = web.AppKey("centers", CenterRegistry)
SERVICE = web.AppKey("service", JobService)
POLLER = web.AppKey("poller", Poller)
