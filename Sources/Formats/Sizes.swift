/// Sizes computed from a file's header. A header can state any numbers: a product that wrapped
/// around would pass the length check and then mislead every reader of the shape, so every
/// size a reader derives from a file goes through these checks.

/// The largest image side a reader accepts (any dimension that may become a side of an image):
/// far above any scan, and small enough that a few sides multiplied stay far from overflowing.
public let maxImageSide = 65_536

/// The smallest image side the models take: the UNet's three 2x2 poolings need 8 pixels.
public let minImageSide = 8

/// The product of `factors`, or nil where a factor is negative or the product overflows Int.
/// Zero factors are left out while checking, so that every partial product (the strides of an
/// array with an empty dimension among huge ones) fits too; the result is then 0.
public func checkedProduct(_ factors: [Int]) -> Int? {
    var product = 1, empty = false
    for f in factors {
        guard f >= 0 else { return nil }
        if f == 0 { empty = true; continue }
        let (p, overflow) = product.multipliedReportingOverflow(by: f)
        if overflow { return nil }
        product = p
    }
    return empty ? 0 : product
}

/// The bytes of `shape` elements of `elementSize` bytes each, or nil on overflow.
public func checkedByteCount(_ shape: [Int], elementSize: Int) -> Int? {
    guard let count = checkedProduct(shape) else { return nil }
    let (bytes, overflow) = count.multipliedReportingOverflow(by: elementSize)
    return overflow ? nil : bytes
}
