"""Kodori's settings: one module, read from the environment only.

``DJANGO_ENV`` picks the defaults: ``development`` (the default; what ``make run`` uses), ``test`` (what
the pytest plugin sets) or ``production``. In production every setting that protects data or users must be
given explicitly and a missing one raises ``ImproperlyConfigured`` naming it; development defaults are
spelled out below so nobody wonders where a value came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DJANGO_ENV = env.str("DJANGO_ENV", default="development")
if DJANGO_ENV not in {"development", "test", "production"}:
    raise ImproperlyConfigured(f"DJANGO_ENV must be development, test or production, not {DJANGO_ENV!r}")
PRODUCTION = DJANGO_ENV == "production"

# Where `make run` keeps its private PostgreSQL, Redis, uploaded blobs and beat schedule.
DEV_STATE_DIR = Path(env.str("KODORI_STATE_DIR", default=str(BASE_DIR / ".kodori")))
if DJANGO_ENV == "development":
    # `make run` writes the addresses and generated secrets of its private servers here; real environment
    # variables still win.
    environ.Env.read_env(DEV_STATE_DIR / "env")

_REQUIRED_IN_PRODUCTION = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "AUTH_SECRET", "ALLOWED_HOSTS")
if PRODUCTION:
    for _name in _REQUIRED_IN_PRODUCTION:
        if not env.str(_name, default=""):
            raise ImproperlyConfigured(f"{_name} must be set when DJANGO_ENV=production")

# Development defaults: the PostgreSQL and Redis that `make run` starts (kodori/devtools/servers.py).
_DEV_DATABASE_URL = "postgres://kodori@127.0.0.1:54329/kodori"
_DEV_REDIS_URL = "redis://127.0.0.1:63799/0"
# Not secrets: they only ever protect a developer's local demo data.
_DEV_SECRET_KEY = "dev-only-secret-key-not-for-production-0123456789abcdef"  # noqa: S105
_DEV_AUTH_SECRET = "dev-only-auth-secret-not-for-production-0123456789abcdef"  # noqa: S105

SECRET_KEY = env.str("SECRET_KEY", default=_DEV_SECRET_KEY)
# The root of kodori-managed key-encryption keys (wrap method "global"): each tenant's KEK is derived from it
# with HKDF-SHA256. Rotate it by moving the old value into AUTH_SECRET_FALLBACKS and running
# `manage.py rotate_auth_secret`.
AUTH_SECRET = env.str("AUTH_SECRET", default=_DEV_AUTH_SECRET)
AUTH_SECRET_FALLBACKS: list[str] = env.list("AUTH_SECRET_FALLBACKS", default=[])
if PRODUCTION and len(AUTH_SECRET) < 32:
    raise ImproperlyConfigured("AUTH_SECRET must be at least 32 characters of random data")

DEBUG = env.bool("DEBUG", default=DJANGO_ENV == "development")
ALLOWED_HOSTS: list[str] = env.list(
    "ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"]
)
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

DATABASES = {"default": env.db_url("DATABASE_URL", default=_DEV_DATABASE_URL)}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if not DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # Row locks, partial unique constraints, triggers and bulk re-wrap updates are PostgreSQL features.
    raise ImproperlyConfigured("DATABASE_URL must point to PostgreSQL (postgres://...)")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default=_DEV_REDIS_URL)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.humanize",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "tenants",
    "audit",
    "encryption",
    "blobs",
    "offboarding",
    # The project package itself: no models; it composes the admin site (kodori/admin.py).
    "kodori",
]
if not PRODUCTION:
    # `manage.py run_emulators`: local cloud KMS emulators, a development and test tool only.
    INSTALLED_APPS.append("emulators")

# Kodori's rules (kodori/middleware.py) wrap Django's: the request id first, so every response and log line
# has it; the refusal log, HEAD and the API's JSON errors see the final answer of everything inside them. The
# control-character check runs after the CSRF check, whose parse of a form body it reuses; a HEAD is turned
# into a GET (for views that refuse HEAD) last, once every check has seen it.
MIDDLEWARE = [
    "kodori.middleware.RequestIdMiddleware",
    "kodori.middleware.RefusalLogMiddleware",
    "kodori.middleware.HeadMiddleware",
    "kodori.middleware.ApiErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "kodori.middleware.NoStoreMiddleware",
    "tenants.middleware.CurrentTenantMiddleware",
    "kodori.middleware.ControlCharacterMiddleware",
    "kodori.middleware.HeadAsGetMiddleware",
]
# Refused forms get Kodori's 403 page (JSON on the API); kodori/urls.py names the other error handlers.
CSRF_FAILURE_VIEW = "kodori.errors.csrf_failure"

ROOT_URLCONF = "kodori.urls"
WSGI_APPLICATION = "kodori.wsgi.application"
ASGI_APPLICATION = "kodori.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "tenants.context_processors.current_tenant",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if DJANGO_ENV == "test":
    # Hashing at full strength would dominate the suite's run time; production keeps the default.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# collectstatic's target; production serves it through WhiteNoise (development serves static/ directly).
STATIC_ROOT = env.path("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")) if PRODUCTION else None
# In development the web process serves static files straight from static/; production runs collectstatic.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(DEV_STATE_DIR / "media")))

STORAGES: dict[str, Any] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    default="django.core.mail.backends.smtp.EmailBackend"
    if PRODUCTION
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Kodori <no-reply@localhost>")

# --- Security ----------------------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
    if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Celery ------------------------------------------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 3600
# Work that must not be lost: acknowledge after the task ran, and give the task back when a worker dies.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A message not acknowledged within this many seconds is redelivered: longer than any task may run.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)}
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(DEV_STATE_DIR / "celerybeat-schedule")
# Every periodic task, in one place; intervals in seconds.
CELERY_BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    # Probe the cloud keys Kodori depends on; seal or unseal their tenants (docs/architecture.md).
    "reverify-active-keys": {
        "task": "encryption.tasks.reverify_active_keys",
        "schedule": env.float("KODORI_REVERIFY_INTERVAL_SECONDS", default=300.0),
    },
    # Beat's heartbeat, which /healthz reports.
    "beat-heartbeat": {
        "task": "kodori.tasks.record_heartbeat",
        "schedule": env.float("HEARTBEAT_INTERVAL_SECONDS", default=60.0),
        "kwargs": {"component": "beat"},
    },
    # The re-wrap watchdog: resumes a running walk whose worker died (KODORI_REWRAP_STALL_SECONDS below).
    "encryption-resume-stalled-rewraps": {
        "task": "encryption.tasks.resume_stalled_rewraps",
        "schedule": env.float("KODORI_REWRAP_WATCHDOG_SECONDS", default=60.0),
    },
    # Sign each tenant's audit chain head (checkpoints), and verify every chain in full (docs/audit.md).
    "audit-sign-checkpoints": {
        "task": "audit.tasks.sign_checkpoints",
        "schedule": env.float("AUDIT_CHECKPOINT_INTERVAL_SECONDS", default=300.0),
    },
    "audit-verify-chains": {
        "task": "audit.tasks.verify_chains",
        "schedule": env.float("AUDIT_FULL_VERIFY_INTERVAL_SECONDS", default=86400.0),
    },
    # Remove uploads a crash left unfinished (BLOB_STALE_UPLOAD_SECONDS below).
    "blobs-sweep-stale-uploads": {
        "task": "blobs.tasks.sweep_stale_uploads",
        "schedule": env.float("BLOB_SWEEP_INTERVAL_SECONDS", default=900.0),
    },
    # Fold the counters' pending deltas (blob totals, data keys per key version) into their bases.
    "blobs-fold-counters": {
        "task": "blobs.tasks.fold_counters",
        "schedule": env.float("COUNTER_FOLD_INTERVAL_SECONDS", default=60.0),
    },
    # The scrub: a bounded, rate-limited slice of the pass over every blob (BLOB_SCRUB_* below).
    "blobs-scrub": {
        "task": "blobs.tasks.scrub_blobs",
        "schedule": env.float("BLOB_SCRUB_INTERVAL_SECONDS", default=3600.0),
    },
    # Erase tenants whose deletion fell due (and resume an erasure a crash interrupted), then remove the
    # audit chains of erased tenants past TENANT_AUDIT_RETENTION_DAYS (docs/offboarding.md).
    "offboarding-erase-due-tenants": {
        "task": "offboarding.tasks.erase_due_tenants",
        "schedule": env.float(
            "TENANT_ERASURE_INTERVAL_SECONDS", default=30.0 if DJANGO_ENV == "development" else 300.0
        ),
    },
    "offboarding-purge-expired-audit": {
        "task": "offboarding.tasks.purge_expired_audit",
        "schedule": 86400.0,
    },
}

# --- Offboarding (docs/offboarding.md) ---------------------------------------------------------------------
# Development and demos only: a scheduled deletion falls due after this many seconds instead of its 7-30
# days, so an erasure can be watched (`TENANT_DELETION_SHORT_WINDOW_SECONDS=120 make run`). Refused in
# production (check offboarding.E001).
TENANT_DELETION_SHORT_WINDOW_SECONDS = env.int("TENANT_DELETION_SHORT_WINDOW_SECONDS", default=0)
# How long an erased tenant's audit chain is kept (read-only, support only) before it is removed with a
# final signed record. Seven years by default.
TENANT_AUDIT_RETENTION_DAYS = env.int("TENANT_AUDIT_RETENTION_DAYS", default=2557)
# Rows and objects per erasure batch (one transaction each).
TENANT_ERASURE_BATCH_SIZE = env.int("TENANT_ERASURE_BATCH_SIZE", default=500)
# An export is cut into parts of at most this many bytes of files (a larger file gets a part of its own) and
# this many files; each part is one archive that can be downloaded again on its own.
EXPORT_PART_BYTES = env.int("EXPORT_PART_BYTES", default=4 * 1024**3)
EXPORT_PART_FILES = env.int("EXPORT_PART_FILES", default=10_000)

# --- Keys
# ----------------------------------------------------------------------------------------------------
# How long a process keeps an unwrapped tenant key version: short for customer KMS so a revocation bites soon.
KODORI_TKV_CACHE_TTL_CUSTOMER = env.float("KODORI_TKV_CACHE_TTL_CUSTOMER", default=300.0)
KODORI_TKV_CACHE_TTL_DEFAULT = env.float("KODORI_TKV_CACHE_TTL_DEFAULT", default=3600.0)
KODORI_TKV_CACHE_MAX_ENTRIES = env.int("KODORI_TKV_CACHE_MAX_ENTRIES", default=10_000)
# DEKs wrapped under one key version (random 96-bit nonces) before it is rotated: far below AES-GCM's 2^32
# bound.
KODORI_TKV_MAX_WRAPS = env.int("KODORI_TKV_MAX_WRAPS", default=2**30)

# --- Re-wrap walk (moves data keys to the active key version so retired keys can be deleted) -------------
# Start a walk automatically after every rotation (off by default in the test suite, which starts its own).
KODORI_REWRAP_AFTER_ROTATION = env.bool("KODORI_REWRAP_AFTER_ROTATION", default=DJANGO_ENV != "test")
# Data keys per batch: one transaction, one checkpoint. 10,000 keeps the per-batch bookkeeping small next to
# the rows (bench/rewrap.py, docs/benchmarks.md: 1.01 x a raw UPDATE, 0.89-0.90 with 5,000) while a batch
# holds its locks for about 0.2 s at the measured 55,000 data keys a second.
KODORI_REWRAP_BATCH_SIZE = env.int("KODORI_REWRAP_BATCH_SIZE", default=10_000)
# A task walks this long, then queues its continuation, so pause/cancel and other tenants get their turn.
KODORI_REWRAP_SLICE_SECONDS = env.float("KODORI_REWRAP_SLICE_SECONDS", default=30.0)
# A running walk whose checkpoint is older than this is resumed by the watchdog (its worker died).
KODORI_REWRAP_STALL_SECONDS = env.float("KODORI_REWRAP_STALL_SECONDS", default=120.0)
# Calls to a KMS: transient failures are retried with jittered exponential backoff within this deadline.
KODORI_KMS_DEADLINE_SECONDS = env.float("KODORI_KMS_DEADLINE_SECONDS", default=10.0)
KODORI_KMS_MAX_ATTEMPTS = env.int("KODORI_KMS_MAX_ATTEMPTS", default=5)
KODORI_KMS_BACKOFF_BASE = env.float("KODORI_KMS_BACKOFF_BASE", default=0.1)
KODORI_KMS_BACKOFF_MAX = env.float("KODORI_KMS_BACKOFF_MAX", default=2.0)

# Azure Key Vault: Kodori's multi-tenant application, authenticated by a federated (workload identity) token.
KODORI_AZURE_CLIENT_ID = env.str("KODORI_AZURE_CLIENT_ID", default="")
KODORI_AZURE_FEDERATED_TOKEN_FILE = env.str(
    "KODORI_AZURE_FEDERATED_TOKEN_FILE", default=env.str("AZURE_FEDERATED_TOKEN_FILE", default="")
)
# The operator key (wrap method operator_kms_azure) and the directory of the deployment's own identity.
KODORI_AZURE_OPERATOR_KEY_URL = env.str("KODORI_AZURE_OPERATOR_KEY_URL", default="")
KODORI_AZURE_OPERATOR_DIRECTORY_ID = env.str("KODORI_AZURE_OPERATOR_DIRECTORY_ID", default="")
# Emulator only (deployment settings, never per tenant): where vault requests and token requests really go,
# and the CA that signs the emulator's certificates.
KODORI_AZURE_VAULT_ENDPOINT = env.str("KODORI_AZURE_VAULT_ENDPOINT", default="")
KODORI_AZURE_AUTHORITY_HOST = env.str("KODORI_AZURE_AUTHORITY_HOST", default="")
KODORI_AZURE_CA_BUNDLE = env.str("KODORI_AZURE_CA_BUNDLE", default="")

# AWS KMS (docs/providers.md): customer keys through sts:AssumeRole into the tenant's role with its
# ExternalId; Kodori's own identity comes from boto3's default chain (IRSA, instance profile...), never from
# settings.
# The operator key (wrap method operator_kms_aws), used with that identity directly.
KODORI_AWS_OPERATOR_KEY_ARN = env.str("KODORI_AWS_OPERATOR_KEY_ARN", default="")
# Kodori's own AWS principal, shown to owners for their role's trust policy.
KODORI_AWS_PRINCIPAL_ARN = env.str("KODORI_AWS_PRINCIPAL_ARN", default="")
# Kodori's GCP principal (workload identity member), shown to owners for their key's IAM binding.
KODORI_GCP_PRINCIPAL = env.str("KODORI_GCP_PRINCIPAL", default="")
# Emulator only (deployment setting, never per tenant): one URL for STS and KMS.
KODORI_AWS_ENDPOINT_URL = env.str("KODORI_AWS_ENDPOINT_URL", default="")

# GCP Cloud KMS (docs/providers.md): Kodori's own workload identity pool (a deployment-level external account;
# customers grant Kodori's principal or service account on their key). The subject token file holds Kodori's
# OIDC token (e.g. a projected Kubernetes service account token).
KODORI_GCP_WIF_AUDIENCE = env.str("KODORI_GCP_WIF_AUDIENCE", default="")
KODORI_GCP_SUBJECT_TOKEN_FILE = env.str("KODORI_GCP_SUBJECT_TOKEN_FILE", default="")
# Optional service account the federated principal impersonates (operator keys, and customer keys unless the
# per-tenant template below is set).
KODORI_GCP_SERVICE_ACCOUNT = env.str("KODORI_GCP_SERVICE_ACCOUNT", default="")
# Optional per-tenant service account, e.g. "kodori-t{tenant_id}@kodori-prod.iam.gserviceaccount.com": each
# customer grants its key to its own account only, so no tenant can use another's key through Kodori.
KODORI_GCP_TENANT_SERVICE_ACCOUNT = env.str("KODORI_GCP_TENANT_SERVICE_ACCOUNT", default="")
# The operator key (wrap method operator_kms_gcp): a CryptoKey resource name.
KODORI_GCP_OPERATOR_KEY = env.str("KODORI_GCP_OPERATOR_KEY", default="")
# Emulator only (deployment settings, never per tenant): the gRPC endpoint (host:port on loopback), the STS
# token URL, the IAM Credentials origin for impersonation, and a non-default universe domain.
KODORI_GCP_KMS_ENDPOINT = env.str("KODORI_GCP_KMS_ENDPOINT", default="")
KODORI_GCP_STS_URL = env.str("KODORI_GCP_STS_URL", default="")
KODORI_GCP_IAM_CREDENTIALS_URL = env.str("KODORI_GCP_IAM_CREDENTIALS_URL", default="")
KODORI_GCP_UNIVERSE_DOMAIN = env.str("KODORI_GCP_UNIVERSE_DOMAIN", default="")

# --- Tenancy -----------------------------------------------------------------------------------------------
# The one address support answers, shown to owners who want cloud KMS switched on.
SUPPORT_EMAIL = env.str("SUPPORT_EMAIL", default="support@kodori.example")
# The Markdown guides served at /guides/ (kodori/guides/): docs/ of the checkout, which the wheel leaves out.
# A directory without every guide fails `manage.py check` (kodori.E001).
KODORI_GUIDES_DIR = Path(env.str("KODORI_GUIDES_DIR", default=str(BASE_DIR / "docs")))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "kodori.middleware.RequestIdLogFilter"},
        # A second line of defence: access keys, client secrets, private keys never reach a log line.
        "redact_credentials": {"()": "encryption.credentials.RedactStaticCredentialsFilter"},
        # Refusals (4xx, 503) are one line each, from kodori.middleware.RefusalLogMiddleware: Django's own
        # lines for them (with an Http404's or a SuspiciousOperation's traceback) are dropped; 500s stay.
        "expected_refusals": {"()": "kodori.middleware.ExpectedRefusalFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["expected_refusals", "request_id", "redact_credentials"],
        },
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Audit (the audit app; docs/audit.md) ------------------------------------------------------------------
# Ed25519 key that signs each tenant's chain head (checkpoints): the base64 of a raw 32-byte private key, from
# `manage.py generate_audit_signing_key`. Required in production. Development and test default: empty, which
# means a key derived from SECRET_KEY (audit/signing.py): stable per checkout, never secret. To rotate, move
# the
# old key's *public* half into AUDIT_PREVIOUS_PUBLIC_KEYS and set the new private key.
if PRODUCTION and not env.str("AUDIT_SIGNING_KEY", default=""):
    raise ImproperlyConfigured("AUDIT_SIGNING_KEY must be set when DJANGO_ENV=production")
AUDIT_SIGNING_KEY = env.str("AUDIT_SIGNING_KEY", default="")
AUDIT_PREVIOUS_PUBLIC_KEYS: list[str] = env.list("AUDIT_PREVIOUS_PUBLIC_KEYS", default=[])
# Downloads are frequent and rarely key-custody evidence: recorded only when switched on.
AUDIT_BLOB_DOWNLOADS = env.bool("AUDIT_BLOB_DOWNLOADS", default=False)
# A download answer up to this size is decrypted and authenticated whole before its first byte is sent (so
# it arrives complete or not at all); a larger one streams and aborts the connection at a damaged chunk.
BLOB_VERIFY_BEFORE_SEND_BYTES = env.int("BLOB_VERIFY_BEFORE_SEND_BYTES", default=8 * 1024 * 1024)
# /audit shows this many events a page, and verifies at most this many new events per view (the rest later).
AUDIT_PAGE_SIZE = env.int("AUDIT_PAGE_SIZE", default=50)
AUDIT_PAGE_VERIFY_LIMIT = env.int("AUDIT_PAGE_VERIFY_LIMIT", default=50_000)
# The STORAGES alias that keeps a write-once copy of every signed checkpoint outside the database, under
# audit-witness/ (audit/witness.py; docs/audit.md, "The witness"). Production: an S3 bucket with Object Lock.
AUDIT_WITNESS_STORAGE = "blobs"
if DJANGO_ENV == "test":
    # The test runner empties tables with TRUNCATE between transactional tests; the audit tables' trigger
    # lets TRUNCATE through when this session setting is on only in a test database, where
    # audit/truncate_bypass.py installs that variant after migrate (migration 0008's has no bypass).
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options["options"] = f"{_options.get('options', '')} -c kodori.audit_allow_truncate=on".strip()

# --- Blobs (the blobs app; docs/api.md) -------------------------------------------------------------------
# Where blob ciphertext goes: "filesystem" (under BLOB_ROOT, default MEDIA_ROOT/blobs) or "s3" (any
# S3-compatible service through django-storages; credentials from the standard AWS chain, never settings).
BLOB_STORAGE = env.str("BLOB_STORAGE", default="filesystem")
if BLOB_STORAGE == "filesystem":
    STORAGES["blobs"] = {
        "BACKEND": "blobs.storage.BlobFileSystemStorage",
        "OPTIONS": {"location": env.str("BLOB_ROOT", default=str(MEDIA_ROOT / "blobs"))},
    }
elif BLOB_STORAGE == "s3":
    if not env.str("BLOB_S3_BUCKET", default=""):
        raise ImproperlyConfigured("BLOB_S3_BUCKET must be set when BLOB_STORAGE=s3")
    STORAGES["blobs"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env.str("BLOB_S3_BUCKET"),
            "region_name": env.str("BLOB_S3_REGION", default="") or None,
            # An S3-compatible service or a local emulator; a deployment setting, never per tenant.
            "endpoint_url": env.str("BLOB_S3_ENDPOINT_URL", default="") or None,
            "location": env.str("BLOB_S3_PREFIX", default=""),
            "default_acl": None,
            "querystring_auth": False,
            "file_overwrite": True,
        },
    }
else:
    raise ImproperlyConfigured(f"BLOB_STORAGE must be filesystem or s3, not {BLOB_STORAGE!r}")
# Multipart part size for S3 writes (5 MiB minimum; 10,000 parts make the largest object 10,000 x this).
AWS_S3_FILE_BUFFER_SIZE = env.int("BLOB_S3_PART_SIZE", default=16 * 1024 * 1024)
# Limits, per tenant, in bytes: one blob, and all of a tenant's blobs together (uploads in flight count).
BLOB_MAX_SIZE = env.int("BLOB_MAX_SIZE", default=10 * 1024**3)
BLOB_TENANT_QUOTA = env.int("BLOB_TENANT_QUOTA", default=100 * 1024**3)
# An upload still "uploading" after this long was cut off by a crash: the sweeper deletes it and its object.
BLOB_STALE_UPLOAD_SECONDS = env.int("BLOB_STALE_UPLOAD_SECONDS", default=6 * 3600)
BLOB_PAGE_SIZE = env.int("BLOB_PAGE_SIZE", default=25)
BLOB_API_PAGE_SIZE = env.int("BLOB_API_PAGE_SIZE", default=50)
# The scrub (blobs/scrub.py; docs/operations.md, "Scrub"): reads at most this many bytes a second (0: no
# limit); each periodic run scrubs for at most BLOB_SCRUB_RUN_SECONDS (0: the periodic scrub is off) and a new
# pass over every blob starts at most every BLOB_SCRUB_PASS_INTERVAL_SECONDS. With the defaults a run reads up
# to 14 GiB an hour, 2.3 TiB a week. Keep BLOB_SCRUB_RUN_SECONDS well under CELERY_VISIBILITY_TIMEOUT.
BLOB_SCRUB_BYTES_PER_SECOND = env.int("BLOB_SCRUB_BYTES_PER_SECOND", default=16 * 1024 * 1024)
BLOB_SCRUB_RUN_SECONDS = env.float("BLOB_SCRUB_RUN_SECONDS", default=900.0)
BLOB_SCRUB_PASS_INTERVAL_SECONDS = env.float("BLOB_SCRUB_PASS_INTERVAL_SECONDS", default=7 * 86400.0)
