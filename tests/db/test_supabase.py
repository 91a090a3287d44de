"""Supabase as the target: its database already has an ``auth`` schema, owned by Supabase's auth service
(``supabase_auth_admin``) with row level security on ``auth.users``, and the project migrates as a role
that owns neither (Supabase's ``postgres`` is not a superuser). Simulated here on a fresh database."""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from everreach_data.db.migrate import discover, migrate

APP_ROLE = "everreach_supabase_app"
AUTH_ROLE = "supabase_auth_admin"

# What Supabase's auth service creates (abridged: the columns are its, the table has more of them).
SUPABASE_AUTH = """
CREATE SCHEMA auth AUTHORIZATION {auth};
CREATE TABLE auth.users (
    instance_id uuid, id uuid NOT NULL PRIMARY KEY, aud varchar(255), role varchar(255), email varchar(255),
    encrypted_password varchar(255), email_confirmed_at timestamptz, raw_app_meta_data jsonb,
    raw_user_meta_data jsonb, is_super_admin bool, created_at timestamptz, updated_at timestamptz,
    phone text UNIQUE, is_anonymous boolean NOT NULL DEFAULT false
);
ALTER TABLE auth.users OWNER TO {auth};
ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;
GRANT USAGE ON SCHEMA auth TO {app};
GRANT SELECT, REFERENCES ON auth.users TO {app};
GRANT CREATE ON DATABASE {database} TO {app};
ALTER SCHEMA public OWNER TO {app};
"""


def _roles(conn: psycopg.Connection) -> None:
    for role, options in ((AUTH_ROLE, "NOLOGIN"), (APP_ROLE, "LOGIN NOSUPERUSER NOBYPASSRLS")):
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            try:
                conn.execute(sql.SQL("CREATE ROLE {} " + options).format(sql.Identifier(role)))
            except psycopg.errors.UniqueViolation:
                pass  # another test process made it first (roles are cluster-wide)


def as_role(url: str, role: str) -> str:
    return url.replace("postgresql://postgres:@", f"postgresql://{role}:@", 1)


def test_migrations_run_beside_supabases_auth_schema(empty_db_url):
    database = conninfo_to_dict(empty_db_url)["dbname"]
    user_id = uuid.uuid4()
    with psycopg.connect(empty_db_url, autocommit=True) as admin:
        _roles(admin)
        admin.execute(sql.SQL(SUPABASE_AUTH).format(auth=sql.Identifier(AUTH_ROLE), app=sql.Identifier(APP_ROLE),
                                                    database=sql.Identifier(database)))
        admin.execute("INSERT INTO auth.users (id, email, created_at) VALUES (%s, 'a@example.com', now())",
                      (user_id,))

    applied = migrate(as_role(empty_db_url, APP_ROLE))
    assert applied == [m.name for m in discover()]
    assert migrate(as_role(empty_db_url, APP_ROLE)) == []

    with psycopg.connect(empty_db_url, autocommit=True) as admin:
        owner, rls = admin.execute("SELECT relowner::regrole::text, relrowsecurity FROM pg_class "
                                   "WHERE oid = 'auth.users'::regclass").fetchone()
        assert (owner, rls) == (AUTH_ROLE, True)  # Supabase's table is left as it was
        columns = admin.execute("SELECT count(*) FROM information_schema.columns "
                                "WHERE table_schema = 'auth' AND table_name = 'users'").fetchone()[0]
        assert columns == 14
        assert admin.execute("SELECT relowner::regrole::text FROM pg_class WHERE oid = 'meta_webhook_event'"
                             "::regclass").fetchone()[0] == APP_ROLE

    # The app's rows reference Supabase's users (foreign keys are checked past row level security).
    with psycopg.connect(as_role(empty_db_url, APP_ROLE), autocommit=True) as app:
        app.execute("INSERT INTO user_event (user_id, event_type) VALUES (%s, 'signup')", (user_id,))
        try:
            app.execute("INSERT INTO user_event (user_id, event_type) VALUES (%s, 'signup')", (uuid.uuid4(),))
        except psycopg.errors.ForeignKeyViolation:
            pass
        else:
            raise AssertionError("a user_event for a user auth.users does not have was accepted")
