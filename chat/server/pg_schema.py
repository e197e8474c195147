"""The PostgreSQL schema of the database the nodes of a cluster share: the same tables
as SQLite's (schema.py), written for PostgreSQL, versioned in ``schema_version``. Search
uses a trigram index (``pg_trgm``) where the extension can be created, a scan otherwise.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    """
    CREATE TABLE account (
        name_key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        skeleton TEXT NOT NULL DEFAULT '',
        reads_from BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX account_by_skeleton ON account(skeleton);
    CREATE TABLE chat_group (
        name_key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        owner_key TEXT NOT NULL,
        created_seq BIGSERIAL NOT NULL,
        invite_only BOOLEAN NOT NULL DEFAULT FALSE,
        active_at DOUBLE PRECISION NOT NULL DEFAULT 0
    );
    CREATE TABLE group_member (
        group_key TEXT NOT NULL REFERENCES chat_group(name_key) ON DELETE CASCADE,
        user_key TEXT NOT NULL,
        user_name TEXT NOT NULL,
        position INTEGER NOT NULL,
        pending BOOLEAN NOT NULL DEFAULT FALSE,
        joined_at BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (group_key, user_key)
    );
    CREATE TABLE group_kick (
        group_key TEXT NOT NULL REFERENCES chat_group(name_key) ON DELETE CASCADE,
        user_key TEXT NOT NULL,
        PRIMARY KEY (group_key, user_key)
    );
    CREATE TABLE offline_message (
        id BIGSERIAL PRIMARY KEY,
        recipient_key TEXT NOT NULL,
        sender TEXT NOT NULL,
        text TEXT NOT NULL,
        sent_at DOUBLE PRECISION NOT NULL,
        sender_key TEXT NOT NULL DEFAULT '',
        size INTEGER NOT NULL DEFAULT 0,
        message_id BIGINT NOT NULL DEFAULT 0,
        seq BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX offline_by_recipient ON offline_message(recipient_key, id);
    CREATE INDEX offline_by_sender ON offline_message(recipient_key, sender_key);
    CREATE INDEX offline_by_age ON offline_message(sent_at);
    CREATE TABLE message (
        id BIGSERIAL PRIMARY KEY,
        conv TEXT NOT NULL,
        seq BIGINT NOT NULL,
        sender TEXT NOT NULL,
        recipient TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL,
        sent_at DOUBLE PRECISION NOT NULL,
        sender_key TEXT NOT NULL DEFAULT '',
        client_id TEXT,
        UNIQUE (conv, seq)
    );
    CREATE UNIQUE INDEX message_by_client_id ON message(sender_key, client_id)
        WHERE client_id IS NOT NULL;
    CREATE INDEX message_by_conv_id ON message(conv, id);
    CREATE INDEX message_by_age ON message(sent_at);
    CREATE TABLE conversation (
        conv TEXT PRIMARY KEY,
        last_seq BIGINT NOT NULL
    );
    CREATE TABLE read_mark (
        user_key TEXT NOT NULL,
        conv TEXT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (user_key, conv)
    );
    """,
]

#: Run once after the migrations, where allowed: a trigram index for search (ILIKE).
TRIGRAM_INDEX = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS message_text_trgm ON message USING gin (text gin_trgm_ops)",
]
