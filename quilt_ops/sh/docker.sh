# shellcheck shell=sh
# The docker CLI's part of a step's script (quilt_ops.docker_access.ScriptDocker): functions run
# after its prologue (say, qdocker). Values come only as arguments.

# docker_inspect TEMPLATE NAME...: "say inspect", then every container inspected in one docker
# call, docker's errors on stdout too (TEMPLATE never asks for the environment).
docker_inspect() {
    say inspect
    di_template=$1
    shift
    qdocker inspect --format "$di_template" -- "$@" 2>&1
}

# docker_remove NAME...: docker rm -f of the containers; a container already gone is not an error.
docker_remove() {
    qdocker rm -f -- "$@" 2>&1 || true
}
