"""reports.share_token may be null: a revoked share link leaves the report without one

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('reports') as batch:
        batch.alter_column('share_token', existing_type=sa.String(length=64), nullable=True)


def downgrade() -> None:
    # Reports whose link was revoked get a fresh token (never shown) so the column can be NOT NULL again.
    import secrets
    conn = op.get_bind()
    for (report_id,) in conn.execute(sa.text("SELECT id FROM reports WHERE share_token IS NULL")).fetchall():
        conn.execute(sa.text("UPDATE reports SET share_token = :t WHERE id = :i"),
                     {"t": secrets.token_urlsafe(24), "i": report_id})
    with op.batch_alter_table('reports') as batch:
        batch.alter_column('share_token', existing_type=sa.String(length=64), nullable=False)
