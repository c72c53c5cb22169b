"""Two web servers, one site: what one stores the other serves at once, and a key disabled through one is
refused by the other on its next request, though it holds the key in memory.

The cluster (``conftest.py``: ``kodori.devtools.cluster``'s processes with production settings, blobs on
moto's S3) runs gunicorn A on 127.0.0.2 and B on 127.0.0.3, two Celery workers and beat on one PostgreSQL
and one Redis.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from blobs.models import Blob
from encryption import services
from encryption.format import envelope
from encryption.models import KeyStatus, TenantKey, WrapMethod
from tenants.models import Tenant
from tests.blobs.support import make_token, pattern
from tests.conftest import PASSWORD
from tests.encryption.support import enable_cloud_kms, rotate_kek
from tests.multimachine.conftest import Cluster, cluster_password
from tests.multimachine.support import (
    MIB,
    Browser,
    api,
    aws_key_for,
    decrypts,
    delete,
    error_code,
    fetch,
    listed,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


# --- One server writes, the other reads ---------------------------------------------------------------------


def test_what_one_web_server_stores_the_other_serves_at_once(
    whole: Cluster, tenant: Tenant, member: Any
) -> None:
    token = make_token(member)
    a, b = api(whole.web_a, whole.port, token), api(whole.web_b, whole.port, token)
    data = pattern(3 * MIB + 12345)
    status, created = a.upload("through-a.bin", data, len(data))
    assert status == 201, created
    blob_id = created["id"]
    assert blob_id in listed(b)
    assert fetch(b, blob_id) == (200, data)
    code, _headers, chunks = b.download(blob_id, {"Range": "bytes=2000000-2000999"})
    assert (code, b"".join(chunks)) == (206, data[2_000_000:2_001_000])
    # What S3 holds is the ciphertext, written by A, read by B.
    key = Blob.objects.get(pk=blob_id).storage_key
    stored = whole.s3.get_object(Bucket=whole.bucket, Key=key)["Body"].read()
    assert stored[:4] == envelope.MAGIC and len(stored) == envelope.ciphertext_size(len(data))
    assert data[:4096] not in stored

    status, other = b.upload("through-b.bin", data[:1000], 1000)
    assert status == 201 and fetch(a, other["id"]) == (200, data[:1000])
    assert delete(a, blob_id) == 204
    assert fetch(b, blob_id)[0] == 404
    assert blob_id not in listed(b) and key not in whole.object_keys()

    # A session made by A is good on B (sessions live in PostgreSQL): one site behind a load balancer.
    browser = Browser()
    browser.sign_in(whole.url(whole.web_a), cluster_password(member).email, PASSWORD)
    status, _headers, page = browser.request(whole.url(whole.web_b), "GET", "/blobs")
    assert status == 200 and b"through-b.bin" in page


# --- A key disabled through one server ----------------------------------------------------------------------


def test_a_key_disabled_through_one_server_is_refused_by_the_other_at_once(
    whole: Cluster, kms: Any, tenant: Tenant, owner: Any, member: Any
) -> None:
    enable_cloud_kms(tenant)
    key_arn, role_arn = aws_key_for(kms, tenant)
    aws_key = services.register_key(
        tenant, WrapMethod.CUSTOMER_KMS_AWS, key_arn, {"role_arn": role_arn}, actor=owner
    )
    services.verify_key(aws_key.pk)  # active: new data keys are wrapped under the customer's AWS key
    token = make_token(member)
    a, b = api(whole.web_a, whole.port, token), api(whole.web_b, whole.port, token)
    old_data, new_data = os.urandom(200_000), os.urandom(100_000)
    status, under_aws = a.upload("under-aws.bin", old_data, len(old_data))
    assert status == 201, under_aws
    rotate_kek(tenant)  # a kodori-managed key takes over; the AWS key retires, still holding that file's key
    status, under_new = a.upload("under-new.bin", new_data, len(new_data))
    assert status == 201, under_new
    assert TenantKey.objects.get(pk=aws_key.pk).status == KeyStatus.RETIRED

    # B serves the older file, the second time from the key it keeps in memory: no call to AWS KMS.
    assert fetch(b, under_aws["id"]) == (200, old_data)
    calls = decrypts(kms)
    assert fetch(b, under_aws["id"]) == (200, old_data)
    assert decrypts(kms) == calls, "B did not keep the unwrapped key version"

    # The owner disables the AWS key through A ...
    browser = Browser()
    browser.sign_in(whole.url(whole.web_a), cluster_password(owner).email, PASSWORD)
    status, _headers, page = browser.request(
        whole.url(whole.web_a), "POST", f"/encryption/keys/{aws_key.pk}/disable", {"confirm": ""}
    )
    assert status == 302, page[-2000:]
    # ... and B refuses that file on its very next request, without asking AWS: the key's status is read from
    # PostgreSQL on every use, whatever the process holds in memory.
    code, body = fetch(b, under_aws["id"])
    assert code == 503 and error_code(body) == "key_unavailable"
    assert "disabled in Kodori" in json.loads(body)["error"]["message"]
    assert decrypts(kms) == calls
    assert fetch(b, under_new["id"]) == (200, new_data)  # the rest of the tenant is untouched

    # Disabling the active key, through B this time (same session), seals the tenant: A refuses uploads now.
    active = TenantKey.objects.get(tenant=tenant, status=KeyStatus.ACTIVE)
    status, _headers, page = browser.request(
        whole.url(whole.web_b), "POST", f"/encryption/keys/{active.pk}/disable", {"confirm": tenant.slug}
    )
    assert status == 302, page[-2000:]
    status, refused = a.upload("after.bin", b"x", 1)
    assert status == 503 and refused["error"]["code"] == "tenant_sealed"
    assert fetch(a, under_new["id"])[0] == 503
