"""checkpoints.clean_check and checkpoints.detected_arch: what the upload measured and recognised

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('checkpoints') as batch:
        batch.add_column(sa.Column('clean_check', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('detected_arch', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('checkpoints') as batch:
        batch.drop_column('detected_arch')
        batch.drop_column('clean_check')
