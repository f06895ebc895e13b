import TensorIO
import XCTest

final class SHA256Tests: XCTestCase {
    func digest(_ bytes: [UInt8], pieces: Int = 1) -> String {
        var h = SHA256()
        let step = max(1, bytes.count / pieces)
        var i = 0
        while i < bytes.count {
            h.update(Array(bytes[i..<min(bytes.count, i + step)]))
            i += step
        }
        return SHA256.hex(h.finalize())
    }

    // FIPS 180-4 example vectors.
    func testKnownVectors() {
        XCTAssertEqual(digest([]), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(digest(Array("abc".utf8)),
                       "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let two = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        XCTAssertEqual(digest(two), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(digest(two, pieces: 7), digest(two))
        let million = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        XCTAssertEqual(digest(million, pieces: 13),
                       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }
}
