"""eval_shards: an evaluation split over workers, one row per shard

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'eval_shards',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=False),
        sa.Column('index', sa.Integer(), nullable=False),
        sa.Column('start', sa.Integer(), nullable=False),
        sa.Column('end', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('task_id', sa.String(length=64), nullable=True),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('max_attempts', sa.Integer(), nullable=False),
        sa.Column('worker_hostname', sa.String(length=255), nullable=True),
        sa.Column('worker_pid', sa.Integer(), nullable=True),
        sa.Column('done', sa.Float(), nullable=False),
        sa.Column('total', sa.Float(), nullable=False),
        sa.Column('stage', sa.String(length=200), nullable=True),
        sa.Column('eta_seconds', sa.Float(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('outcome', sa.JSON(), nullable=True),
        sa.Column('started_at', sa.DateTime(), nullable=True),
        sa.Column('finished_at', sa.DateTime(), nullable=True),
        sa.Column('heartbeat_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('job_id', 'index', name='uq_eval_shard_index'),
    )
    op.create_index('ix_eval_shards_job_id', 'eval_shards', ['job_id'])
    op.create_index('ix_eval_shards_status', 'eval_shards', ['status'])


def downgrade() -> None:
    op.drop_index('ix_eval_shards_status', table_name='eval_shards')
    op.drop_index('ix_eval_shards_job_id', table_name='eval_shards')
    op.drop_table('eval_shards')
