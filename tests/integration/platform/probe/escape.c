/* Tries the syscalls container escapes start with; prints one line per attempt:
 * "<name> ok" when the kernel let it through, "<name> <errno>" otherwise.
 * Built statically by the isolation test and run inside a machine. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report(const char *name, long rc) {
    if (rc < 0)
        printf("%s %d\n", name, errno);
    else
        printf("%s ok\n", name);
}

int main(void) {
    union bpf_attr attr;
    struct perf_event_attr pe;

    report("keyctl", syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, "escape"));
    report("add_key", syscall(SYS_add_key, "user", "escape", "x", 1, KEY_SPEC_PROCESS_KEYRING));
    memset(&attr, 0, sizeof attr);
    report("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
    memset(&pe, 0, sizeof pe);
    pe.type = PERF_TYPE_SOFTWARE;
    pe.size = sizeof pe;
    pe.config = PERF_COUNT_SW_CPU_CLOCK;
    report("perf_event_open", syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0));
    report("unshare_user", unshare(CLONE_NEWUSER));
    report("unshare_mount", unshare(CLONE_NEWNS));
    report("mount", mount("none", "/mnt", "tmpfs", 0, NULL));
    report("init_module", syscall(SYS_init_module, NULL, 0, ""));
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, -1, NULL, 0));
    report("setns", syscall(SYS_setns, -1, 0));
    return 0;
}
