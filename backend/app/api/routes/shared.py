"""The share link's data: one report, unlocked by its share token instead of the API token."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Path

from robaudit.backend.app import reports
from robaudit.backend.app.api.deps import SessionDep
from robaudit.backend.app.schemas import Message, SharedReport

router = APIRouter(prefix="/shared", tags=["shared"])

# Share tokens are secrets.token_urlsafe(24): 32 URL-safe characters; older or longer ones up to 64.
ShareToken = Path(min_length=8, max_length=64, pattern="^[A-Za-z0-9_-]+$",
                  description="The token at the end of the report's share URL (/share/{token}).")


# No auth dependency on purpose: whoever holds the share link may read this one report, even when
# reads otherwise need the API token.
@router.get("/{token}", response_model=SharedReport, response_model_exclude_unset=True,
            responses={404: {"model": Message}})
def read_shared_report(session: SessionDep, token: str = ShareToken) -> Any:
    """Get the report a share link unlocks: its aggregated numbers, as its exports carry them.

    No API token is needed: the share token is the credential, and it unlocks only its own report.
    Per-sample data, the report's id and its page URL are left out.
    """
    payload = reports.shared_payload(session, token)
    if payload is None:
        raise HTTPException(404, detail="no report is shared under this token")
    return payload
