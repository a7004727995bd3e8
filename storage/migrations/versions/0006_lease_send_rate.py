"""lease and send_rate: what several processes on one database share

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 22:35:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
import storage.types


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One Telegram poller among several processes, and one send rate per provider sender
    # however many workers send through it.
    op.create_table('lease',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('holder', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('expires_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('send_rate',
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('sender', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('next_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('channel', 'sender')
    )


def downgrade() -> None:
    op.drop_table('send_rate')
    op.drop_table('lease')
