"""The services every handler shares, and how a server builds them from its config."""

from __future__ import annotations

from dataclasses import dataclass, field

from chat.server.accounts import Accounts
from chat.server.config import ServerConfig
from chat.server.groups import GroupRegistry
from chat.server.hub import Hub, LocalHub
from chat.server.login_throttle import LoginThrottle
from chat.server.mailbox import Mailbox, MailboxLimits
from chat.server.passwords import PasswordWork
from chat.server.presence import PresenceFeed
from chat.server.redis_hub import RedisHub
from chat.server.redis_tokens import RedisResumeTokens
from chat.server.resume_tokens import ResumeTokens
from chat.server.store_api import Store, make_store
from chat.server.transfers import TransferRelay


@dataclass
class Services:
    """Everything a handler may use, shared by all connections of this server."""

    hub: Hub
    groups: GroupRegistry
    storage: Store
    accounts: Accounts
    transfers: TransferRelay
    #: Announces logins and exits to everyone online, in batches.
    presence: PresenceFeed
    #: Private messages kept for offline registered users.
    mailbox: Mailbox
    #: Every limit and option of this server.
    config: ServerConfig
    #: Tokens that let a client's next connection resume its session.
    resume_tokens: ResumeTokens | RedisResumeTokens = field(default_factory=ResumeTokens)


def build_services(config: ServerConfig) -> Services:
    """The services of one server (or of one in-memory test server) with ``config``."""
    storage = make_store(config.db_path, config)
    hub: Hub = LocalHub() if config.redis_url is None else RedisHub(config.redis_url)
    services = Services(
        hub=hub,
        groups=GroupRegistry(
            config.max_groups_per_user, config.max_groups, config.max_owned_groups,
            config.group_creations_per_hour,
        ),
        storage=storage,
        accounts=Accounts(
            storage, config.wrong_password_delay,
            throttle=LoginThrottle(
                config.max_login_attempts, config.max_login_attempts_per_ip,
                config.failed_login_alert, config.login_delay_cap,
            ),
            work=PasswordWork(max_waiting=config.password_queue),
            registrations_per_ip=config.max_registrations_per_ip,
        ),
        transfers=TransferRelay(
            config.max_file_size, config.transfer_window, config.max_transfers_per_user,
            config.offer_timeout, config.transfer_idle_timeout, config.max_incoming_transfers,
        ),
        presence=PresenceFeed(),
        mailbox=Mailbox(
            storage,
            MailboxLimits(
                config.offline_max_messages, config.offline_max_bytes, config.offline_sender_share,
                config.offline_server_bytes, config.offline_days,
            ),
        ),
        config=config,
    )
    if isinstance(hub, RedisHub):
        services.resume_tokens = RedisResumeTokens(hub.link.redis)
    return services
