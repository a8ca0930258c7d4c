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

void Notifier::clear() {
    signalled_.store(false);
    uint64_t buf[8];
    while (::read(read_fd_, buf, sizeof(buf)) > 0) {
    }
}

}  // namespace a3s
