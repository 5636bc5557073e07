# The stand-in's database client: sourced by registry-app, flask and create_admin.
# It reaches the database the way the registry does: from SQLALCHEMY_DATABASE_URI in
# the container's own environment, split as SQLAlchemy's make_url splits it
# (scheme://user:password@host:port/database, percent-escapes decoded), then handed
# to libpq (psql) through PG* variables, never on a command line.

# Decodes %XX escapes (as SQLAlchemy unquotes the URL's parts).
db_unquote() {
    printf '%b' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/%\([0-9A-Fa-f][0-9A-Fa-f]\)/\\x\1/g')"
}

# Exports PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE from SQLALCHEMY_DATABASE_URI.
db_env() {
    uri=$SQLALCHEMY_DATABASE_URI
    case "$uri" in
    postgresql://* | postgresql+*://* | postgres://*) ;;
    "")
        echo "KeyError: 'SQLALCHEMY_DATABASE_URI'" >&2
        return 1
        ;;
    *)
        echo "sqlalchemy.exc.ArgumentError: Could not parse rfc1738 URL from string" >&2
        return 1
        ;;
    esac
    rest=${uri#*://}
    netloc=${rest%%/*}
    db=${rest#"$netloc"}
    db=${db#/}
    db=${db%%\?*}
    case "$netloc" in
    *@*) userinfo=${netloc%@*} hostport=${netloc##*@} ;;
    *) userinfo="" hostport=$netloc ;;
    esac
    user=${userinfo%%:*}
    case "$userinfo" in *:*) password=${userinfo#*:} ;; *) password="" ;; esac
    host=${hostport%:*}
    port=${hostport##*:}
    [ "$host" != "$hostport" ] || port=5432
    PGHOST=$(db_unquote "$host")
    PGPORT=$port
    PGUSER=$(db_unquote "$user")
    PGPASSWORD=$(db_unquote "$password")
    PGDATABASE=$(db_unquote "${db:-postgres}")
    PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-5}
    export PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE PGCONNECT_TIMEOUT
}

# psql on the registry's database: SQL on stdin, extra arguments (-v name=value) passed on.
# shellcheck disable=SC2120 # callers pass -v name=value
db_psql() {
    db_env || return 1
    psql -X -q -A -t -w -v ON_ERROR_STOP=1 "$@"
}

# One statement; its output (unaligned, tuples only) on stdout, psql's error on stderr.
db_query() {
    printf '%s\n' "$1" | db_psql
}

# The first line of psql's error, without psql's own prefix (for tracebacks and health bodies).
db_error() {
    printf '%s\n' "$1" | sed -n 's/^psql: error: //; /./{p;q}'
}
