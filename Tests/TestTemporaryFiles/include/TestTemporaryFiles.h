// The test process's own temporary directory (temporary_files.c), or "" when it could not be
// made or LOCKSTEP_KEEP_TEST_FILES is set.
#ifndef LOCKSTEP_TEST_TEMPORARY_FILES_H
#define LOCKSTEP_TEST_TEMPORARY_FILES_H
const char *lockstep_test_temporary_root(void);
#endif
