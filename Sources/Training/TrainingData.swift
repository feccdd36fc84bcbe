// The training and test splits of a config (IDX, CIFAR-10 binary, CSV, image folders; packed
// shards in PackedData.swift), loaded once per process.
import Configuration
import Datasets
import Foundation

/// The training and test splits, loaded once per process and shared by simulated ranks.
public struct TrainingData: @unchecked Sendable {
    public let train: ImageDataset
    public let test: ImageDataset
    /// The value a black (zero) pixel has after normalisation: used to pad random crops.
    public let padValue: Float
    /// How raw inputs become the model's inputs (stored in checkpoints for deployment).
    public let normalization: InputNormalization
    /// The classes' names when the data names them (image folders), for checkpoints when the
    /// config gives none.
    public var classNames: [String]?

    public init(train: ImageDataset, test: ImageDataset, padValue: Float, normalization: InputNormalization = .none) {
        self.train = train
        self.test = test
        self.padValue = padValue
        self.normalization = normalization
    }

    /// A program's own splits (`Dataset`, read once into memory); features are used as given.
    public init(train: some Dataset, test: some Dataset) throws {
        let train = try ImageDataset(train, name: "train"), test = try ImageDataset(test, name: "test")
        guard train.sampleShape == test.sampleShape, train.classes == test.classes else {
            throw DatasetError(message: "the test split's samples are \(test.sampleShape) in \(test.classes) classes but the training split's \(train.sampleShape) in \(train.classes)")
        }
        self.init(train: train, test: test, padValue: 0)
    }

    public static func load(_ config: TrainingConfig) throws -> TrainingData {
        switch config.data.format {
        case .idx: return try loadIDX(config)
        case .cifar10: return try loadCIFAR(config)
        case .csv: return try loadCSV(config)
        case .folder: return try loadFolder(config)
        case .packed: return try loadPacked(config)
        }
    }

    /// Image folders: `<path>/<train_split>/<class>/...` and `<path>/<test_split>/<class>/...`,
    /// classes from the training split's folder names; one mean and standard deviation over the
    /// training pixels (all channels), as for CIFAR-10.
    static func loadFolder(_ config: TrainingConfig) throws -> TrainingData {
        let d = config.data
        let trainDir = (d.path as NSString).appendingPathComponent(d.trainSplit)
        let testDir = (d.path as NSString).appendingPathComponent(d.testSplit)
        let classes = try ImageFolder.classNames(trainDir)
        guard classes.count == d.classes else {
            throw DataError("\(trainDir): \(classes.count) class folders (\(classes.joined(separator: ", "))) but data.classes is \(d.classes); set data.classes: \(classes.count)")
        }
        if let names = d.classNames, names != classes {
            throw DataError("\(trainDir): the class folders are \(classes) but data.class_names is \(names); leave class_names out or list the folders in sorted order")
        }
        // Each image is kept as its centre resize × resize square; samples are its centre
        // image_size square, or a random resized crop of it in training.
        let resize = d.resize > 0 ? d.resize : d.imageSize
        let shape = [d.channels, d.imageSize, d.imageSize], stored = [d.channels, resize, resize]
        if d.stream { return try streamFolder(config, classes: classes, trainDir: trainDir, testDir: testDir, shape: shape, stored: stored) }
        let train = try ImageFolder.read(trainDir, classes: classes, channels: d.channels, resize: resize, size: resize, byName: d.fileOrder == .name)
        let test = try ImageFolder.read(testDir, classes: classes, channels: d.channels, resize: resize, size: resize, byName: d.fileOrder == .name)
        let stats = ImageDataset.statistics(train.bytes)
        let mean = d.mean.map(Float.init) ?? stats.mean, std = d.std.map(Float.init) ?? stats.std
        var data = TrainingData(train: ImageDataset(name: "train", sampleShape: shape, storedShape: stored, classes: d.classes, bytes: train.bytes, labels: train.labels, mean: mean, std: std),
                                test: ImageDataset(name: "test", sampleShape: shape, storedShape: stored, classes: d.classes, bytes: test.bytes, labels: test.labels, mean: mean, std: std),
                                padValue: (0 - mean) / std, normalization: .pixels(mean: mean, std: std))
        data.classNames = classes
        return data
    }

    /// data.stream: the splits' files, read when a sample is used. Every file is decoded once
    /// here (the training split's statistics, the test split's check), and nothing is kept.
    static func streamFolder(_ config: TrainingConfig, classes: [String], trainDir: String, testDir: String, shape: [Int], stored: [Int]) throws -> TrainingData {
        let d = config.data
        func files(_ dir: String) throws -> (ImageFiles, [Int32]) {
            let list = try ImageFolder.files(dir, classes: classes, byName: d.fileOrder == .name)
            return (ImageFiles(paths: list.map(\.path), channels: d.channels, side: stored[1]), list.map { Int32($0.label) })
        }
        let (trainFiles, trainLabels) = try files(trainDir), (testFiles, testLabels) = try files(testDir)
        let stats = try trainFiles.statistics()
        _ = try testFiles.statistics()
        let mean = d.mean.map(Float.init) ?? stats.mean, std = d.std.map(Float.init) ?? stats.std
        var data = TrainingData(train: ImageDataset(name: "train", sampleShape: shape, storedShape: stored, classes: d.classes, source: trainFiles, labels: trainLabels, mean: mean, std: std),
                                test: ImageDataset(name: "test", sampleShape: shape, storedShape: stored, classes: d.classes, source: testFiles, labels: testLabels, mean: mean, std: std),
                                padValue: (0 - mean) / std, normalization: .pixels(mean: mean, std: std))
        data.classNames = classes
        return data
    }

    static func loadIDX(_ config: TrainingConfig) throws -> TrainingData {
        let dir = config.data.path
        let trainImages = try ImageDataset.findFile(dir, "\(config.data.trainSplit)-images-idx3-ubyte")
        let trainLabels = try ImageDataset.findFile(dir, "\(config.data.trainSplit)-labels-idx1-ubyte")
        let testImages = try ImageDataset.findFile(dir, "\(config.data.testSplit)-images-idx3-ubyte")
        let testLabels = try ImageDataset.findFile(dir, "\(config.data.testSplit)-labels-idx1-ubyte")
        // Without data.normalize, the statistics come from the training split (identical on
        // every rank) and the test split is normalised with them.
        let train = try ImageDataset.load(imagesPath: trainImages, labelsPath: trainLabels, name: "train",
                                          classes: config.data.classes, mean: config.data.mean.map(Float.init),
                                          std: config.data.std.map(Float.init))
        let mean = train.mean!, std = train.std!
        let test = try ImageDataset.load(imagesPath: testImages, labelsPath: testLabels, name: "test",
                                         classes: config.data.classes, mean: mean, std: std)
        guard train.sampleShape == test.sampleShape else {
            throw DataError("\(testImages): test images are \(test.sampleShape), training images \(train.sampleShape)")
        }
        return TrainingData(train: train, test: test, padValue: (0 - mean) / std, normalization: .pixels(mean: mean, std: std))
    }

    /// CIFAR-10 binary batches; one mean and standard deviation over all channels of the
    /// training split (per-channel statistics would need per-channel storage scales).
    static func loadCIFAR(_ config: TrainingConfig) throws -> TrainingData {
        let train = try CIFAR10.load(path: config.data.path, split: "train", classes: config.data.classes,
                                     mean: config.data.mean.map(Float.init), std: config.data.std.map(Float.init))
        let mean = train.mean!, std = train.std!
        let test = try CIFAR10.load(path: config.data.path, split: "test", classes: config.data.classes, mean: mean, std: std)
        return TrainingData(train: train, test: test, padValue: (0 - mean) / std, normalization: .pixels(mean: mean, std: std))
    }

    /// CSV files: features standardised with the training file's per-column statistics.
    static func loadCSV(_ config: TrainingConfig) throws -> TrainingData {
        let dir = config.data.path
        let trainPath = (dir as NSString).appendingPathComponent(config.data.trainFile)
        let testPath = (dir as NSString).appendingPathComponent(config.data.testFile)
        let trainTable = try CSVReader.read(path: trainPath, format: config.data.csv, classes: config.data.classes)
        let testTable = try CSVReader.read(path: testPath, format: config.data.csv, classes: config.data.classes)
        guard trainTable.featureNames == testTable.featureNames || !config.data.csv.header else {
            throw DataError("\(testPath): feature columns \(testTable.featureNames) differ from \(trainPath)'s \(trainTable.featureNames)")
        }
        guard trainTable.featureNames.count == testTable.featureNames.count else {
            throw DataError("\(testPath): \(testTable.featureNames.count) feature columns, \(trainPath) has \(trainTable.featureNames.count)")
        }
        let (mean, std) = CSVReader.statistics(trainTable.features)
        return TrainingData(train: CSVReader.dataset(trainTable, name: "train", classes: config.data.classes, mean: mean, std: std),
                            test: CSVReader.dataset(testTable, name: "test", classes: config.data.classes, mean: mean, std: std),
                            padValue: 0, normalization: .features(mean: mean, std: std))
    }
}
