// One temporary directory per test process, removed when the process exits. Before any test
// runs (an ELF constructor), TMPDIR is pointed at a fresh directory inside the old one, so that
// NSTemporaryDirectory(), the `lockstep` and `mpirun` processes the tests start, and OpenMPI's
// session files all land there. Without it every run of the suite left its run directories,
// data files and MPI session files behind (tens of thousands of entries, 30 GB in /tmp after
// two days of sessions here). LOCKSTEP_KEEP_TEST_FILES=1 keeps them, for looking into a failure.
#define _XOPEN_SOURCE 700
#include "TestTemporaryFiles.h"
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char root[512];
static pid_t owner;

const char *lockstep_test_temporary_root(void) { return root; }

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *where) {
    (void)st; (void)flag; (void)where;
    remove(path);
    return 0;   // go on past what cannot be removed
}

static void remove_root(void) {
    // Only the process that made it: a forked child that exits must not take it away.
    if (root[0] && getpid() == owner) nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

__attribute__((constructor)) static void make_root(void) {
    const char *keep = getenv("LOCKSTEP_KEEP_TEST_FILES");
    if (keep && *keep && *keep != '0') return;
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    if (snprintf(root, sizeof root, "%s/lockstep-tests-XXXXXX", base) >= (int)sizeof root || !mkdtemp(root)) {
        root[0] = 0;   // the tests then use TMPDIR as it was
        return;
    }
    owner = getpid();
    setenv("TMPDIR", root, 1);
    atexit(remove_root);
}
