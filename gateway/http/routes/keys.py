"""Typed keys for the objects the app shares with its handlers."""

from aiohttp import web

from gateway.apps.service import AppService
from gateway.apps.verification import CanaryRunner
from gateway.centers.configured import CenterRegistry
from gateway.centers.evaluation.service import EvaluationService
from gateway.centers.health import HealthMonitor
from gateway.centers.power import PowerService
from gateway.config import LoadedConfig
from gateway.data.transfers import TransferService
from gateway.identity.audit import AuditTrail
from gateway.identity.keyring import Keyring
from gateway.identity.tokens import TokenIssuer
from gateway.identity.vault import Vault
from gateway.identity.verifier import TokenVerifier
from gateway.jobs.events import EventBus
from gateway.jobs.poller import Poller
from gateway.jobs.service import JobService
from gateway.jobs.store import JobStore
from gateway.tes.service import TesService

CONFIG = web.AppKey("config", LoadedConfig)
STORE = web.AppKey("store", JobStore)
CENTERS = web.AppKey("centers", CenterRegistry)
SERVICE = web.AppKey("service", JobService)
POLLER = web.AppKey("poller", Poller)
VAULT = web.AppKey("vault", Vault)
KEYRING = web.AppKey("keyring", Keyring)
ISSUER = web.AppKey("issuer", TokenIssuer)
VERIFIER = web.AppKey("verifier", TokenVerifier)
AUDIT = web.AppKey("audit", AuditTrail)
TRANSFERS = web.AppKey("transfers", TransferService)
POWER = web.AppKey("power", PowerService)
EVALUATIONS = web.AppKey("evaluations", EvaluationService)
EVENTS = web.AppKey("events", EventBus)
HEALTH = web.AppKey("health", HealthMonitor)
APPS = web.AppKey("apps", AppService)
CANARIES = web.AppKey("canaries", CanaryRunner)
TES = web.AppKey("tes", TesService)
