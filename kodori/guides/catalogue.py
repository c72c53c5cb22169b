"""The guides Kodori serves, by name: the allow-list that the pages, the links and the system check share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings


@dataclass(frozen=True)
class Guide:
    """One guide: ``slug`` is its URL name and its file ``docs/<slug>.md``."""

    slug: str
    title: str
    summary: str
    group: str

    @property
    def filename(self) -> str:
        return f"{self.slug}.md"

    @property
    def path(self) -> Path:
        return guides_dir() / self.filename


BYOK = "Bring your own key"
EVIDENCE = "Evidence and leaving"
DEVELOPERS = "For developers"

GUIDES: tuple[Guide, ...] = (
    Guide("byok-aws", "AWS KMS", "Create a key and a role in AWS, register them, rotate, revoke.", BYOK),
    Guide("byok-azure", "Azure Key Vault", "Let Kodori's application use one version of your key.", BYOK),
    Guide("byok-gcp", "GCP Cloud KMS", "Grant Kodori's workload identity one CryptoKey, nothing else.", BYOK),
    Guide("identifiers", "Key identifiers", "The identifiers Kodori accepts, the secrets it refuses.", BYOK),
    Guide("audit", "The audit log", "What is recorded; verifying an evidence bundle offline.", EVIDENCE),
    Guide("offboarding", "Leaving Kodori", "Export, scheduled deletion, the erasure certificate.", EVIDENCE),
    Guide("api", "The files API", "Tokens, uploads, lists, downloads and errors, with curl.", DEVELOPERS),
)
GROUPS: tuple[str, ...] = (BYOK, EVIDENCE, DEVELOPERS)
_BY_SLUG = {guide.slug: guide for guide in GUIDES}


def guides_dir() -> Path:
    return Path(settings.KODORI_GUIDES_DIR)


def find(slug: str) -> Guide | None:
    """The guide called ``slug``, or None: a name not in ``GUIDES`` never reaches the file system."""
    return _BY_SLUG.get(slug)
