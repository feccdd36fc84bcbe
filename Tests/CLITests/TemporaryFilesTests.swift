// The suite's temporary files: everything a test process and its children write under TMPDIR
// lands in the process's own directory (TestSupport/TemporaryFiles.swift), removed at exit.
import Foundation
import TestSupport
import XCTest

final class TemporaryFilesTests: XCTestCase {
    func testTemporaryFilesGoToTheProcessDirectoryAndItsChildrenToo() throws {
        try XCTSkipIf(ProcessInfo.processInfo.environment["LOCKSTEP_KEEP_TEST_FILES"].map { !$0.isEmpty && $0 != "0" } ?? false,
                      "LOCKSTEP_KEEP_TEST_FILES keeps TMPDIR as it was")
        let root = testTemporaryRoot
        XCTAssertTrue(root.contains("/lockstep-tests-"), "the constructor made the process directory: '\(root)'")
        var isDirectory: ObjCBool = false
        XCTAssertTrue(FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory) && isDirectory.boolValue, root)
        XCTAssertTrue(NSTemporaryDirectory().hasPrefix(root), "NSTemporaryDirectory() is \(NSTemporaryDirectory())")
        // A child process (as `lockstep` and `mpirun` are) inherits it.
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/sh")
        child.arguments = ["-c", "printf %s \"$TMPDIR\""]
        let out = Pipe()
        child.standardOutput = out
        try child.run()
        child.waitUntilExit()
        XCTAssertEqual(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self), root)
    }
}
