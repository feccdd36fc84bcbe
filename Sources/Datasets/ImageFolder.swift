// Image folders (`data.format: folder`): `<path>/<split>/<class>/*.png|jpg|jpeg`, the layout
// every image tool writes. Classes are the training split's folder names in sorted order; files
// are taken in sorted order (by class, then name; or by name across classes), so a sample's index (and with it its place in the data order, its
// augmentation and its dropout) is the same on every rank and every run. Each image is decoded,
// its shorter side scaled to `resize` and the centre `size` × `size` square kept; the split is
// then held in memory as bytes, like IDX data.
import Foundation

public enum ImageFolder {
    /// The class folders of `splitDirectory`, sorted; errors name what is missing.
    public static func classNames(_ splitDirectory: String) throws -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: splitDirectory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw DataError("\(splitDirectory): no such directory (an image folder holds <split>/<class>/ images)")
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: splitDirectory).filter { name in
            var dir: ObjCBool = false
            return !name.hasPrefix(".") && FileManager.default.fileExists(atPath: (splitDirectory as NSString).appendingPathComponent(name), isDirectory: &dir) && dir.boolValue
        }.sorted()
        guard names.count >= 2 else {
            throw DataError("\(splitDirectory): \(names.count) class folder(s); a classifier needs at least 2 (<split>/<class>/ images)")
        }
        return names
    }

    /// Every image of `classes` in `splitDirectory`, with its label, in (class, file name) order,
    /// or with `byName` in (file name, class) order across the classes. An empty class folder or
    /// a file that is not a .png/.jpg/.jpeg is an error naming it.
    public static func files(_ splitDirectory: String, classes: [String], byName: Bool = false) throws -> [(path: String, label: Int)] {
        var out: [(String, Int)] = []
        for (label, name) in classes.enumerated() {
            let folder = (splitDirectory as NSString).appendingPathComponent(name)
            guard let items = try? FileManager.default.contentsOfDirectory(atPath: folder) else {
                throw DataError("\(folder): missing; the training split has class '\(name)'")
            }
            let files = items.filter { !$0.hasPrefix(".") }.sorted()
            guard !files.isEmpty else { throw DataError("\(folder): an empty class folder") }
            for file in files {
                let path = (folder as NSString).appendingPathComponent(file)
                guard ImageDecoding.extensions.contains((file as NSString).pathExtension.lowercased()) else {
                    throw DataError("\(path): not an image this reader takes (expected .png, .jpg or .jpeg)")
                }
                out.append((path, label))
            }
        }
        if byName {
            out.sort { a, b in
                let (x, y) = ((a.0 as NSString).lastPathComponent, (b.0 as NSString).lastPathComponent)
                return x != y ? x < y : a.1 < b.1
            }
        }
        return out
    }

    /// Decodes a split into bytes (C, size, size) per image, with its labels.
    public static func read(_ splitDirectory: String, classes: [String], channels: Int, resize: Int, size: Int, byName: Bool = false) throws -> (bytes: [UInt8], labels: [Int32]) {
        let list = try files(splitDirectory, classes: classes, byName: byName)
        var bytes = [UInt8](), labels = [Int32]()
        bytes.reserveCapacity(list.count * channels * size * size)
        for (path, label) in list {
            let image = try ImageDecoding.decode(path, channels: channels)
            bytes += ImageDecoding.resizeAndCenterCrop(image, resize: resize, size: size)
            labels.append(Int32(label))
        }
        return (bytes, labels)
    }
}
