"""datasets: users' own test sets, and jobs.dataset_id for the evaluations that use one

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'datasets',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('filename', sa.String(length=300), nullable=False),
        sa.Column('source_sha256', sa.String(length=64), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.Column('channels', sa.Integer(), nullable=False),
        sa.Column('height', sa.Integer(), nullable=False),
        sa.Column('width', sa.Integer(), nullable=False),
        sa.Column('dtype', sa.String(length=16), nullable=False),
        sa.Column('num_classes', sa.Integer(), nullable=False),
        sa.Column('class_names', sa.JSON(), nullable=True),
        sa.Column('transform', sa.JSON(), nullable=True),
        sa.Column('size_bytes', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('sha256'),
    )
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('dataset_id', sa.Integer(), nullable=True))
        batch.create_foreign_key('fk_jobs_dataset_id', 'datasets', ['dataset_id'], ['id'])
        batch.create_index('ix_jobs_dataset_id', ['dataset_id'])


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_index('ix_jobs_dataset_id')
        batch.drop_constraint('fk_jobs_dataset_id', type_='foreignkey')
        batch.drop_column('dataset_id')
    op.drop_table('datasets')
