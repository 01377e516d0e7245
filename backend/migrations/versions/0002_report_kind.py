"""reports.kind: a plain comparison, or a label-smoothing study whose payload carries its analysis

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('reports') as batch:
        batch.add_column(sa.Column('kind', sa.String(length=32), nullable=False, server_default='comparison'))


def downgrade() -> None:
    with op.batch_alter_table('reports') as batch:
        batch.drop_column('kind')
