#include "notifier.h"

#include <cerrno>
#include <cstdint>
#include <fcntl.h>
#include <stdexcept>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

namespace a3s {

Notifier::Notifier() {
#ifdef __linux__
    read_fd_ = write_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (read_fd_ < 0) throw std::runtime_error("eventfd failed");
#else
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
    for (int fd : fds) {
        ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
        ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    read_fd_ = fds[0];
    write_fd_ = fds[1];
#endif
}

Notifier::~Notifier() {
    if (read_fd_ >= 0) ::close(read_fd_);
    if (write_fd_ >= 0 && write_fd_ != read_fd_) ::close(write_fd_);
}

void Notifier::signal() {
    if (signalled_.exchange(true)) return;
    uint64_t one = 1;
    ssize_t r;
    do {
        r = ::write(write_fd_, &one, write_fd_ == read_fd_ ? sizeof(one) : 1);
    } while (r < 0 && errno == EINTR);
}

// The fd first, the flag second. signal() writes only when it turns the flag from false to true,
// so the flag may be true only while a wakeup is in the fd or a consumer is still to take what
// was published. Clearing the flag first broke that: a signal() landing between the store and the
// read set the flag and wrote, the read swallowed the write, and the flag stayed true with the fd
// empty; every later signal() then returned early and the consumer slept forever (issue 16 item
// 15: streams stalled at 120 s). In this order a signal() before the store sees the flag still
// set and adds nothing, and its output, published before it, is taken by the caller after this
// returns; a signal() after the store writes again. Callers take pending output only after
// clear() returns (Engine::drain), or that output would wait for the next signal.
void Notifier::clear() {
    uint64_t buf[8];
    while (::read(read_fd_, buf, sizeof(buf)) > 0) {
    }
    signalled_.store(false);
}

}  // namespace a3s
