/* LD_PRELOAD shim for the benchmark's S3 server: sets TCP_NODELAY on every socket it
 * accepts. s3s-fs 0.14 leaves Nagle's algorithm on, so the small tail segment of a reply
 * waits for the client's delayed ACK (40 ms on Linux): a bare 64 KiB GET took 2-9 ms or
 * 43-86 ms at random (bench/README.md, "First bytes"). Real S3 servers (AWS, MinIO's Go
 * net stack) disable Nagle; measuring against that artifact would hide every other cost.
 * Built by bench/lib.sh with the machine's cc; S3S_NODELAY=0 runs the server as is. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static int no_delay(int fd) {
  int one = 1;
  if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* fails harmlessly on a non-TCP socket */
  return fd;
}

int accept4(int sock, struct sockaddr *addr, socklen_t *len, int flags) {
  static int (*real)(int, struct sockaddr *, socklen_t *, int);
  if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
  return no_delay(real(sock, addr, len, flags));
}

int accept(int sock, struct sockaddr *addr, socklen_t *len) {
  static int (*real)(int, struct sockaddr *, socklen_t *);
  if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
  return no_delay(real(sock, addr, len));
}
