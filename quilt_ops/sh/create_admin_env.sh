#!/bin/bash
# Runs the host's create_admin.sh with the registry's environment, given as data, never as shell.
#
#   create_admin_env.sh DATA SCRIPT
#
# DATA: a private (0600) file of NUL-terminated NAME=VALUE entries: env/registry as Docker
#       reads it, parsed by quilt-ops (quilt_ops/admin_env.py). It is removed once read.
# SCRIPT: the create_admin.sh to run, from the current folder.
# Nothing in DATA is evaluated: each value is exported verbatim ("export NAME=VALUE" as one
# word), so ';', '$(...)', backticks, '&&', '>' and spaces reach SCRIPT as written. The
# environment is emptied first, but for the session's own basics (values never come from DATA).
set -u
data=$1
script=$2
names=()
values=()
bad=
while IFS= read -r -d '' entry; do
    name=${entry%%=*}
    case $name in
        '' | [0-9]* | *[!A-Za-z0-9_]* | PATH | HOME | USER | LOGNAME | SHELL | TERM | LANG | LC_* | TZ | \
            DOCKER_* | LD_* | BASH* | ENV | SHELLOPTS | IFS | PS4 | CDPATH | GLOBIGNORE | PROMPT_COMMAND | \
            GCONV_PATH | NLSPATH | HOSTALIASES | RES_OPTIONS | LOCPATH | MALLOC_* | GLIBC_TUNABLES | TERMINFO* | \
            TMOUT | PYTHON* | PERL5* | PERLLIB | RUBYOPT | RUBYLIB | NODE_OPTIONS | NODE_PATH)
            bad=1
            break
            ;;
    esac
    names+=("$name")
    values+=("${entry#*=}")
done <"$data"
rm -f -- "$data"
if [ -n "$bad" ]; then
    echo "create_admin_env: a name that is not a variable name, or one kept from the session" >&2
    exit 97
fi
for name in $(compgen -e); do
    case $name in
        PATH | HOME | USER | LOGNAME | SHELL | TERM | LANG | LC_* | TZ | DOCKER_HOST | DOCKER_CONFIG) ;;
        *) unset "$name" ;;
    esac
done
for i in "${!names[@]}"; do
    export "${names[$i]}=${values[$i]}"
done
# Marks the processes that hold the registry's environment by design (as its container does).
export QUILT_OPS_REGISTRY_ENVIRONMENT=create_admin
exec "$script"
