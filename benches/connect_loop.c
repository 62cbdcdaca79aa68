/* The physical reference for portsight's probe CPU (BENCHMARKS section 11):
 * a bare non-blocking TCP connect loop in C, nothing else.
 *
 *   connect_loop SECONDS INTERVAL_MS TIMEOUT_MS INFLIGHT < targets
 *
 * Reads "address port" lines (IPv4 or IPv6 literals) from stdin, then every
 * INTERVAL_MS starts a round that connects to every target, at most INFLIGHT
 * at once, each given TIMEOUT_MS, with SO_LINGER {1, 0} so a connected
 * socket is reset on close and leaves no TIME_WAIT. Completion is read with
 * epoll and SO_ERROR. After SECONDS it prints
 * "rounds R probes P ok O refused F timeout T cpu_us C maxrss_kib M" (its own
 * getrusage) and exits.
 * Built by benches/steady.rs with `cc -O2`. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct target {
    struct sockaddr_storage addr;
    socklen_t len;
};

struct slot {
    int fd;
    double deadline;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s SECONDS INTERVAL_MS TIMEOUT_MS INFLIGHT < targets\n", argv[0]);
        return 2;
    }
    double seconds = atof(argv[1]), interval = atof(argv[2]) / 1e3, timeout = atof(argv[3]) / 1e3;
    int inflight = atoi(argv[4]);
    size_t n = 0, cap = 1024;
    struct target *t = malloc(cap * sizeof *t);
    char host[128];
    unsigned port;
    while (scanf("%127s %u", host, &port) == 2) {
        if (n == cap)
            t = realloc(t, (cap *= 2) * sizeof *t);
        memset(&t[n], 0, sizeof t[n]);
        struct sockaddr_in *v4 = (struct sockaddr_in *)&t[n].addr;
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&t[n].addr;
        if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
            v4->sin_family = AF_INET;
            v4->sin_port = htons(port);
            t[n].len = sizeof *v4;
        } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
            v6->sin6_family = AF_INET6;
            v6->sin6_port = htons(port);
            t[n].len = sizeof *v6;
        } else {
            fprintf(stderr, "bad address %s\n", host);
            return 2;
        }
        n++;
    }
    int ep = epoll_create1(0);
    struct slot *slots = calloc(inflight, sizeof *slots);
    struct epoll_event *events = calloc(inflight, sizeof *events);
    long rounds = 0, probes = 0, ok = 0, refused = 0, timedout = 0;
    struct linger lg = {1, 0};
    double start = now(), next = start;
    while (now() - start < seconds) {
        double wait = next - now();
        if (wait > 0) {
            struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
            nanosleep(&ts, NULL);
        }
        next += interval;
        rounds++;
        size_t i = 0;
        int busy = 0;
        for (int s = 0; s < inflight; s++)
            slots[s].fd = -1;
        while (i < n || busy > 0) {
            for (int s = 0; s < inflight && i < n; s++) {
                if (slots[s].fd >= 0)
                    continue;
                int fd = socket(t[i].addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
                probes++;
                int rc = connect(fd, (struct sockaddr *)&t[i].addr, t[i].len);
                i++;
                if (rc == 0) {
                    ok++;
                    close(fd);
                    continue;
                }
                if (errno != EINPROGRESS) {
                    refused++;
                    close(fd);
                    continue;
                }
                struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = s};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                slots[s].fd = fd;
                slots[s].deadline = now() + timeout;
                busy++;
            }
            int got = epoll_wait(ep, events, inflight, 10);
            for (int e = 0; e < got; e++) {
                struct slot *sl = &slots[events[e].data.u32];
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(sl->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err == 0)
                    ok++;
                else
                    refused++;
                close(sl->fd); /* close removes it from the epoll set */
                sl->fd = -1;
                busy--;
            }
            double tnow = now();
            for (int s = 0; s < inflight; s++) {
                if (slots[s].fd >= 0 && slots[s].deadline <= tnow) {
                    close(slots[s].fd);
                    slots[s].fd = -1;
                    timedout++;
                    busy--;
                }
            }
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long cpu_us = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000L + ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
    printf("rounds %ld probes %ld ok %ld refused %ld timeout %ld cpu_us %ld maxrss_kib %ld\n", rounds, probes, ok,
           refused, timedout, cpu_us, ru.ru_maxrss);
    return 0;
}
