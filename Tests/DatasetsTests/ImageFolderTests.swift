// Image folders and image decoding (Datasets/ImageFolder.swift, ImageDecoding.swift): PNG and
// JPEG in grey and RGB, classes and files in sorted order, the resize and centre crop against
// hand-computed pixels, and bad folders and files named in one line.
import Datasets
import Foundation
import TestSupport
import XCTest

final class ImageFolderTests: XCTestCase {
    var root = ""
    override func setUp() { root = NSTemporaryDirectory() + "lockstep-folder-\(UUID().uuidString)" }
    override func tearDown() { try? FileManager.default.removeItem(atPath: root) }

    func mkdir(_ path: String) { try! FileManager.default.createDirectory(atPath: root + "/" + path, withIntermediateDirectories: true) }

    func testPNGAndJPEGDecodeToGreyAndRGB() throws {
        mkdir("x")
        // A 3×2 RGB image with distinct channels.
        let rgb: [UInt8] = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160, 170, 180]
        writePNG(root + "/x/a.png", width: 3, height: 2, channels: 3, pixels: rgb)
        let png = try ImageDecoding.decode(root + "/x/a.png", channels: 3)
        XCTAssertEqual([png.width, png.height, png.channels], [3, 2, 3])
        XCTAssertEqual(png.pixels, rgb, "PNG is lossless")
        XCTAssertEqual(try ImageDecoding.decode(root + "/x/a.png", channels: 1).pixels.count, 6, "grey: one byte a pixel")
        // JPEG is lossy: a flat grey image survives quality 100 within a level or two.
        writeJPEG(root + "/x/b.JPG", width: 8, height: 8, channels: 1, pixels: [UInt8](repeating: 77, count: 64))
        let jpeg = try ImageDecoding.decode(root + "/x/b.JPG", channels: 3)
        XCTAssertEqual([jpeg.width, jpeg.height, jpeg.channels], [8, 8, 3])
        XCTAssertTrue(jpeg.pixels.allSatisfy { abs(Int($0) - 77) <= 2 }, "\(jpeg.pixels.prefix(6))")
    }

    func testResizeAndCenterCropMatchHandComputedPixels() {
        // A 4×2 grey ramp: the shorter side (2) stays 2, the centre 2×2 square is columns 1-2.
        let ramp = DecodedImage(width: 4, height: 2, channels: 1, pixels: [0, 10, 20, 30, 40, 50, 60, 70])
        XCTAssertEqual(ImageDecoding.resizeAndCenterCrop(ramp, resize: 2, size: 2), [10, 20, 50, 60])
        // Downscaling 4×4 → 2×2: each output pixel centre falls between four inputs (bilinear
        // at (0.5, 0.5) of each 2×2 block: their mean).
        let block = DecodedImage(width: 4, height: 4, channels: 1, pixels: [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60])
        XCTAssertEqual(ImageDecoding.resizeAndCenterCrop(block, resize: 2, size: 2), [10, 18, 42, 50])
        // RGB comes out as planes (C, H, W).
        let two = DecodedImage(width: 1, height: 1, channels: 3, pixels: [1, 2, 3])
        XCTAssertEqual(ImageDecoding.resizeAndCenterCrop(two, resize: 2, size: 2), [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3])
    }

    func testClassesAndFilesInSortedOrder() throws {
        for (cls, files) in [("cat", ["b.png", "a.png"]), ("ant", ["z.jpeg"])] {
            mkdir("train/\(cls)")
            for f in files {
                let path = "\(root)/train/\(cls)/\(f)"
                if f.hasSuffix(".png") { writePNG(path, width: 5, height: 3, channels: 1, pixels: [UInt8](repeating: f == "a.png" ? 100 : 200, count: 15)) }
                else { writeJPEG(path, width: 3, height: 3, channels: 1, pixels: [UInt8](repeating: 50, count: 9)) }
            }
        }
        let classes = try ImageFolder.classNames(root + "/train")
        XCTAssertEqual(classes, ["ant", "cat"])
        let list = try ImageFolder.files(root + "/train", classes: classes)
        XCTAssertEqual(list.map { ($0.path as NSString).lastPathComponent }, ["z.jpeg", "a.png", "b.png"])
        XCTAssertEqual(list.map(\.label), [0, 1, 1])
        let (bytes, labels) = try ImageFolder.read(root + "/train", classes: classes, channels: 1, resize: 3, size: 3)
        XCTAssertEqual(labels, [0, 1, 1])
        XCTAssertEqual(bytes.count, 3 * 9)
        XCTAssertEqual(Array(bytes[9..<18]), [UInt8](repeating: 100, count: 9), "a.png, a flat image, cropped to 3×3")
    }

    func testBadFoldersAndFilesAreNamed() throws {
        func expect(_ body: @autoclosure () throws -> Any, _ parts: [String], line: UInt = #line) {
            XCTAssertThrowsError(try body(), line: line) { error in
                let message = "\(error)"
                for part in parts { XCTAssertTrue(message.contains(part), "\(message) lacks \(part)", line: line) }
                XCTAssertFalse(message.contains("\n"), line: line)
            }
        }
        expect(try ImageFolder.classNames(root + "/train"), ["\(root)/train: no such directory"])
        mkdir("train/a"); mkdir("train/b")
        writePNG(root + "/train/a/1.png", width: 2, height: 2, channels: 1, pixels: [1, 2, 3, 4])
        expect(try ImageFolder.files(root + "/train", classes: ["a", "b"]), ["\(root)/train/b: an empty class folder"])
        _ = FileManager.default.createFile(atPath: root + "/train/b/notes.txt", contents: Data("hello".utf8))
        expect(try ImageFolder.files(root + "/train", classes: ["a", "b"]), ["\(root)/train/b/notes.txt: not an image"])
        // A text file named .png, a truncated PNG and a truncated JPEG.
        _ = FileManager.default.createFile(atPath: root + "/text.png", contents: Data("not a picture".utf8))
        expect(try ImageDecoding.decode(root + "/text.png", channels: 1), ["\(root)/text.png: not a readable PNG"])
        var noise: [UInt8] = (0..<(32 * 32 * 3)).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 7) }
        writePNG(root + "/full.png", width: 32, height: 32, channels: 3, pixels: noise)
        let png = try Data(contentsOf: URL(fileURLWithPath: root + "/full.png"))
        _ = FileManager.default.createFile(atPath: root + "/cut.png", contents: png.prefix(png.count / 2))
        expect(try ImageDecoding.decode(root + "/cut.png", channels: 3), ["\(root)/cut.png: corrupt PNG"])
        noise = Array(noise.prefix(32 * 32))
        writeJPEG(root + "/full.jpg", width: 32, height: 32, channels: 1, pixels: noise)
        let jpg = try Data(contentsOf: URL(fileURLWithPath: root + "/full.jpg"))
        _ = FileManager.default.createFile(atPath: root + "/cut.jpg", contents: jpg.prefix(jpg.count / 2))
        expect(try ImageDecoding.decode(root + "/cut.jpg", channels: 1), ["\(root)/cut.jpg: corrupt JPEG"])
        _ = FileManager.default.createFile(atPath: root + "/text.jpg", contents: Data("not a picture".utf8))
        expect(try ImageDecoding.decode(root + "/text.jpg", channels: 1), ["\(root)/text.jpg: not a readable JPEG"])
        expect(try ImageDecoding.decode(root + "/a.gif", channels: 1), ["unknown image extension '.gif'"])
    }
}
