/*
 * relay: the sandbox's stand-in for nginx in front of uwsgi.
 *
 *   relay LISTEN_ADDR LISTEN_PORT UPSTREAM_ADDR UPSTREAM_PORT [PATH_PREFIX]
 *
 * Accepts TCP connections and relays each one, in a child process, to the
 * upstream. With PATH_PREFIX, the request target of the first request line is
 * prefixed (as nginx hands every path to the uwsgi application). When the
 * upstream does not answer it replies 502, as nginx does.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int write_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w <= 0) return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

static int pump(int from, int to) {
    char buf[16384];
    ssize_t n = read(from, buf, sizeof buf);
    if (n <= 0) return -1;
    return write_all(to, buf, (size_t)n);
}

/* Relays the first chunk from the client, inserting prefix after the method. */
static int pump_first(int from, int to, const char *prefix) {
    char buf[16384];
    ssize_t n = read(from, buf, sizeof buf);
    if (n <= 0) return -1;
    char *space = memchr(buf, ' ', (size_t)n);
    if (!prefix || !space) return write_all(to, buf, (size_t)n);
    size_t head = (size_t)(space - buf) + 1;
    if (write_all(to, buf, head) || write_all(to, prefix, strlen(prefix))) return -1;
    return write_all(to, buf + head, (size_t)n - head);
}

static void serve(int cs, const struct sockaddr_in *ua, const char *prefix) {
    int us = socket(AF_INET, SOCK_STREAM, 0);
    if (us < 0 || connect(us, (const struct sockaddr *)ua, sizeof *ua)) {
        const char *bad = "HTTP/1.0 502 Bad Gateway\r\nContent-Type: text/plain\r\n"
                          "Content-Length: 12\r\n\r\nbad gateway\n";
        write_all(cs, bad, strlen(bad));
        return;
    }
    struct pollfd p[2] = {{cs, POLLIN, 0}, {us, POLLIN, 0}};
    int first = 1;
    for (;;) {
        if (poll(p, 2, 60000) <= 0) return;
        if (p[0].revents) {
            if ((first ? pump_first(cs, us, prefix) : pump(cs, us))) return;
            first = 0;
        }
        if (p[1].revents && pump(us, cs)) return;
    }
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: relay ADDR PORT UPSTREAM_ADDR UPSTREAM_PORT [PATH_PREFIX]\n");
        return 2;
    }
    signal(SIGCHLD, SIG_IGN);
    struct sockaddr_in la, ua;
    memset(&la, 0, sizeof la);
    memset(&ua, 0, sizeof ua);
    la.sin_family = ua.sin_family = AF_INET;
    la.sin_port = htons((unsigned short)atoi(argv[2]));
    ua.sin_port = htons((unsigned short)atoi(argv[4]));
    if (inet_pton(AF_INET, argv[1], &la.sin_addr) != 1 ||
        inet_pton(AF_INET, argv[3], &ua.sin_addr) != 1) {
        fprintf(stderr, "relay: bad address\n");
        return 2;
    }
    const char *prefix = argc == 6 ? argv[5] : NULL;
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&la, sizeof la) || listen(ls, 64)) {
        perror("relay: bind");
        return 1;
    }
    fprintf(stderr, "relay: %s:%s -> %s:%s\n", argv[1], argv[2], argv[3], argv[4]);
    for (;;) {
        int cs = accept(ls, NULL, NULL);
        if (cs < 0) continue;
        if (fork() == 0) {
            close(ls);
            serve(cs, &ua, prefix);
            _exit(0);
        }
        close(cs);
    }
}
