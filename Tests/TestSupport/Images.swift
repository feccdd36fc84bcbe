// Test images: interleaved grey or RGB pixels written as PNG (libpng) and JPEG (TurboJPEG).
import CPNG
import CTurboJPEG
import Foundation

/// Writes an interleaved image (channels 1 or 3) as PNG with libpng.
public func writePNG(_ path: String, width: Int, height: Int, channels: Int, pixels: [UInt8]) {
    var image = png_image()
    lockstep_png_image_init(&image)
    image.width = UInt32(width); image.height = UInt32(height)
    image.format = channels == 1 ? UInt32(PNG_FORMAT_GRAY) : UInt32(PNG_FORMAT_RGB)
    precondition(png_image_write_to_file(&image, path, 0, pixels, 0, nil) != 0, "cannot write \(path)")
}

/// Writes an interleaved image as a JPEG (quality 100, no chroma subsampling) with TurboJPEG.
public func writeJPEG(_ path: String, width: Int, height: Int, channels: Int, pixels: [UInt8]) {
    let handle = tjInitCompress()!
    defer { tjDestroy(handle) }
    var buffer: UnsafeMutablePointer<UInt8>? = nil
    var size: UInt = 0
    let format = channels == 1 ? TJPF_GRAY : TJPF_RGB
    let subsampling = channels == 1 ? TJSAMP_GRAY : TJSAMP_444
    precondition(tjCompress2(handle, pixels, Int32(width), 0, Int32(height), Int32(format.rawValue), &buffer, &size,
                             Int32(subsampling.rawValue), 100, 0) == 0)
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes: buffer!, count: Int(size)))
    tjFree(buffer)
}
