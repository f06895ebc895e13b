// CPython's `random` module, as far as calibration needs it: MT19937 seeded from an integer the
// way `random.seed(n)` does (init_by_array over the 32-bit words of |n|), `getrandbits(k)` and
// `randint(a, b)` by rejection sampling. With it the windows drawn here are those the GPTQ and
// Wanda data loaders draw with `random.seed(seed)` from the same token sequences.

public struct PythonRandom {
    private var mt = [UInt32](repeating: 0, count: 624)
    private var index = 624

    /// `random.seed(seed)` for a non-negative integer seed.
    public init(seed: UInt64) {
        var key: [UInt32] = []
        var n = seed
        repeat {
            key.append(UInt32(truncatingIfNeeded: n))
            n >>= 32
        } while n > 0
        initByArray(key)
    }

    private mutating func initGenrand(_ s: UInt32) {
        mt[0] = s
        for i in 1..<624 {
            mt[i] = 1_812_433_253 &* (mt[i - 1] ^ (mt[i - 1] >> 30)) &+ UInt32(i)
        }
        index = 624
    }

    private mutating func initByArray(_ key: [UInt32]) {
        initGenrand(19_650_218)
        var i = 1, j = 0
        for _ in 0..<max(624, key.count) {
            mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) &* 1_664_525)) &+ key[j] &+ UInt32(j)
            i += 1
            j += 1
            if i >= 624 { mt[0] = mt[623]; i = 1 }
            if j >= key.count { j = 0 }
        }
        for _ in 0..<623 {
            mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) &* 1_566_083_941)) &- UInt32(i)
            i += 1
            if i >= 624 { mt[0] = mt[623]; i = 1 }
        }
        mt[0] = 0x8000_0000
    }

    private mutating func twist() {
        for i in 0..<624 {
            let y = (mt[i] & 0x8000_0000) | (mt[(i + 1) % 624] & 0x7FFF_FFFF)
            mt[i] = mt[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1) == 1 ? 0x9908_B0DF : 0)
        }
        index = 0
    }

    public mutating func nextUInt32() -> UInt32 {
        if index >= 624 { twist() }
        var y = mt[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    /// `random.getrandbits(k)`, 0 < k ≤ 64: 32-bit words least significant first, the last
    /// one shifted right to keep its top bits.
    public mutating func getrandbits(_ k: Int) -> UInt64 {
        precondition(k > 0 && k <= 64)
        if k <= 32 { return UInt64(nextUInt32() >> (32 - k)) }
        let low = UInt64(nextUInt32())
        let high = UInt64(nextUInt32() >> (64 - k))
        return high << 32 | low
    }

    /// `random.randint(a, b)`: a + `_randbelow(b − a + 1)` by rejection on bit_length bits.
    public mutating func randint(_ a: Int, _ b: Int) -> Int {
        precondition(b >= a)
        let n = UInt64(b - a + 1)
        let k = 64 - n.leadingZeroBitCount
        var r = getrandbits(k)
        while r >= n { r = getrandbits(k) }
        return a + Int(r)
    }
}
