"""staff_dialogue: a staff member's dialogue state (the /broadcast wizard) in the database

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 21:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
import storage.types


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Kept in process memory before: with two processes behind a load balancer, a
    # coordinator's next step could reach the other one and be lost.
    op.create_table('staff_dialogue',
    sa.Column('staff_id', sa.Integer(), nullable=False),
    sa.Column('flow', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['staff_id'], ['staff.id'], ),
    sa.PrimaryKeyConstraint('staff_id')
    )
    with op.batch_alter_table('staff_dialogue', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_staff_dialogue_updated_at'), ['updated_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('staff_dialogue', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_staff_dialogue_updated_at'))
    op.drop_table('staff_dialogue')
