"""Dependencies as Annotated aliases: SessionDep, SettingsDep, CeleryDep, and the auth guards."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.core.security import UNAUTHORIZED_DETAIL, token_matches


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.Session() as session:
        yield session


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_db)]
CeleryDep = Annotated[Celery, Depends(get_celery)]

bearer = HTTPBearer(auto_error=False, description="The API token (ROBAUDIT_API_TOKEN, or the generated "
                                                  "one in the data folder's api_token file).")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _check(request: Request, credentials: HTTPAuthorizationCredentials | None) -> None:
    if credentials is None or not token_matches(credentials.credentials, request.app.state.api_token):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                            detail=UNAUTHORIZED_DETAIL,
                            headers={"WWW-Authenticate": "Bearer"})


def require_token(request: Request, credentials: Credentials) -> None:
    """Write endpoints: always need the token."""
    _check(request, credentials)


def require_read_token(request: Request, credentials: Credentials) -> None:
    """Read endpoints: need the token only with ROBAUDIT_READS_REQUIRE_TOKEN=1."""
    if request.app.state.settings.reads_require_token:
        _check(request, credentials)


def has_token(request: Request, credentials: Credentials) -> bool:
    """Whether the caller sent the right API token: reads that are open show secrets (share links) only then."""
    return credentials is not None and token_matches(credentials.credentials, request.app.state.api_token)


HasToken = Annotated[bool, Depends(has_token)]
WriteAccess = Depends(require_token)
ReadAccess = Depends(require_read_token)
