// Where this test process keeps its temporary files: a directory of its own that
// TestTemporaryFiles (a C constructor) made before the tests started and removes at exit.
import Foundation
import TestTemporaryFiles

/// The test process's own temporary directory ("" if it could not be made, or with
/// LOCKSTEP_KEEP_TEST_FILES=1, when TMPDIR is left as it was and nothing is removed).
public var testTemporaryRoot: String { String(cString: lockstep_test_temporary_root()) }
