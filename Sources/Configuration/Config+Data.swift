// The `data` section of a config: where the data is, its format (IDX, CIFAR-10 binary, CSV),
// normalisation, augmentation and the validation split.
import Datasets
import Foundation

extension TrainingConfig {
    static func parseData(_ d: ConfigSection, into config: inout TrainingConfig, file: String) throws {
        config.data.format = try d.choice("format", default: config.data.format)
        config.data.path = try d.string("path", default: config.data.path)
        config.data.trainSplit = try d.string("train_split", default: config.data.trainSplit)
        // MNIST's files name the test split t10k; an image folder's is test/.
        config.data.testSplit = try d.string("test_split", default: [.folder, .packed].contains(config.data.format) ? "test" : config.data.testSplit)
        config.data.classes = try d.int("classes", default: config.data.classes, min: 2)
        if let strings = try d.strings("class_names", expected: "a list of non-empty names", allowEmpty: false) {
            guard strings.count == config.data.classes else {
                throw ConfigError("\(file): 'data.class_names' has \(strings.count) names for \(config.data.classes) classes (data.classes)")
            }
            guard Set(strings).count == strings.count else { throw ConfigError("\(file): 'data.class_names' repeats a name") }
            config.data.classNames = strings
        }
        config.data.dropLast = try d.bool("drop_last", default: config.data.dropLast)
        config.data.evalBatch = try d.int("eval_batch", default: config.data.evalBatch, min: 1)
        config.data.validationSplit = try d.double("validation_split", default: config.data.validationSplit, range: 0...0.5)
        let norm = try d.section("normalize")
        config.data.mean = try norm.optionalDouble("mean")
        config.data.std = try norm.optionalDouble("std")
        if let s = config.data.std, s <= 0 { throw ConfigError("\(file): 'data.normalize.std' must be > 0") }
        try norm.finish()
        let aug = try d.section("augment")
        config.data.augment.horizontalFlip = try aug.bool("horizontal_flip", default: config.data.augment.horizontalFlip)
        config.data.augment.cropPadding = try aug.int("crop_padding", default: config.data.augment.cropPadding, min: 0)
        config.data.augment.translate = try aug.double("translate", default: config.data.augment.translate, range: 0...0.5)
        config.data.augment.noise = try aug.double("noise", default: config.data.augment.noise, range: 0...10)
        // Naming the section (even as 'erasing: {}') turns erasing on with p = 0.5.
        let erasingNamed = aug.raw("erasing") != nil
        let erasing = try aug.section("erasing")
        config.data.augment.erasingProbability = try erasing.double("p", default: erasingNamed ? 0.5 : config.data.augment.erasingProbability, range: 0...1)
        let minArea = try erasing.double("min_area", default: config.data.augment.erasingArea.lowerBound, range: 0.0001...1)
        let maxArea = try erasing.double("max_area", default: config.data.augment.erasingArea.upperBound, range: 0.0001...1)
        guard minArea <= maxArea else {
            throw ConfigError("\(file): 'data.augment.erasing.min_area' (\(minArea)) must not exceed 'max_area' (\(maxArea))")
        }
        config.data.augment.erasingArea = minArea...maxArea
        config.data.augment.erasingAspect = try erasing.double("min_aspect", default: config.data.augment.erasingAspect, range: 0.01...1)
        try erasing.finish()
        // Naming the section (even as 'random_resized_crop: {}') turns it on, torchvision's defaults.
        if aug.raw("random_resized_crop") != nil {
            let crop = try aug.section("random_resized_crop")
            let scale = try crop.doubles("scale", default: [0.08, 1.0], range: 0.0001...1)
            let ratio = try crop.doubles("ratio", default: [0.75, 4.0 / 3.0], range: 0.01...100)
            try crop.finish()
            guard scale.count == 2, scale[0] <= scale[1], ratio.count == 2, ratio[0] <= ratio[1] else {
                throw ConfigError("\(file): 'data.augment.random_resized_crop' needs scale: [low, high] and ratio: [low, high] with low <= high")
            }
            guard [.folder, .packed].contains(config.data.format) else {
                throw ConfigError("\(file): 'data.augment.random_resized_crop' cuts from image folders' stored squares (data.format: folder or packed, with data.resize > data.image_size)")
            }
            config.data.augment.resizedCropScale = scale[0]...scale[1]
            config.data.augment.resizedCropRatio = ratio[0]...ratio[1]
        }
        try aug.finish()
        if config.data.format == .csv {
            config.data.trainFile = try d.string("train_file", default: config.data.trainFile)
            config.data.testFile = try d.string("test_file", default: config.data.testFile)
            config.data.csv.header = try d.bool("header", default: config.data.csv.header)
            let delimiter = try d.string("delimiter", default: String(config.data.csv.delimiter))
            guard delimiter.count == 1 else { throw d.fail("delimiter", d.raw("delimiter"), "a single character") }
            config.data.csv.delimiter = delimiter.first!
            if let names = try d.strings("label_columns", expected: "a list of column names or indices") {
                guard try d.scalar("label_column") == nil else {
                    throw ConfigError("\(file): give 'data.label_column' (integer classes) or 'data.label_columns' (one-hot), not both")
                }
                config.data.csv.labels = .oneHot(names)
            } else {
                config.data.csv.labels = .column(try d.string("label_column", default: "label"))
            }
            guard config.data.augment.isIdentity else {
                throw ConfigError("\(file): 'data.augment' applies to images; tabular data (data.format: csv) takes none")
            }
            guard config.data.mean == nil && config.data.std == nil else {
                throw ConfigError("\(file): 'data.normalize' is for images; CSV features are standardised per column from the training split")
            }
        }
        if config.data.format == .packed {
            // The image keys of the config that was packed may stay: they must match the manifest.
            for key in ["channels", "image_size", "resize"] where try d.scalar(key) != nil {
                config.data.packedExpects[key] = try d.int(key, default: 0, min: 0)
            }
        }
        if config.data.format == .folder {
            let channels = try d.int("channels", default: config.data.channels, min: 1)
            guard channels == 1 || channels == 3 else { throw d.fail("channels", d.raw("channels"), "1 (grey) or 3 (RGB)") }
            config.data.channels = channels
            config.data.imageSize = try d.int("image_size", default: config.data.imageSize, min: 1)
            config.data.resize = try d.int("resize", default: config.data.resize, min: 0)
            config.data.stream = try d.bool("stream", default: config.data.stream)
            config.data.fileOrder = try d.choice("file_order", default: config.data.fileOrder)
            if config.data.resize > 0 && config.data.resize < config.data.imageSize {
                throw ConfigError("\(file): 'data.resize' (\(config.data.resize)) must be at least 'data.image_size' (\(config.data.imageSize)), or 0")
            }
        }
        config.data.prefetch = try d.bool("prefetch", default: config.data.prefetch)
        try d.finish()
    }
}
