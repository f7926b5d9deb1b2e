#!/bin/sh
# Creates the Temporal databases on PostgreSQL and brings both schemas to the version this
# admin-tools image ships. Safe to run again: an existing schema is only updated.
set -eu

: "${POSTGRES_SEEDS:?the PostgreSQL host}"
: "${POSTGRES_USER:?the PostgreSQL user}"
: "${SQL_PASSWORD:?the PostgreSQL password (temporal-sql-tool reads SQL_PASSWORD)}"
DB_PORT="${DB_PORT:-5432}"
SCHEMA_ROOT=/etc/temporal/schema/postgresql/v12

sql() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" -u "$POSTGRES_USER" "$@"
}

setup() {
  database="$1"
  versions="$2"
  if sql --db "$database" create 2>/dev/null; then
    echo "created database $database"
  else
    echo "database $database exists"
  fi
  # update-schema fails on a database without a schema version table: set that up first.
  if ! sql --db "$database" update-schema -d "$versions"; then
    sql --db "$database" setup-schema -v 0.0
    sql --db "$database" update-schema -d "$versions"
  fi
  echo "schema of $database is up to date"
}

setup temporal "$SCHEMA_ROOT/temporal/versioned"
setup temporal_visibility "$SCHEMA_ROOT/visibility/versioned"
