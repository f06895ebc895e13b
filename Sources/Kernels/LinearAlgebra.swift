import _COpenBLAS

public enum LinearAlgebra {
    /// Solves X·A = R for X in place of R (R: [m, n] row-major; A: [n, n] symmetric positive
    /// definite, overwritten by its Cholesky factor), through LAPACK dpotrf/dpotrs. Returns false
    /// when A is not positive definite.
    public static func solveRightSPD(_ a: inout [Double], n: Int, _ r: inout [Double], rows m: Int) -> Bool {
        precondition(a.count == n * n && r.count == m * n)
        if n == 0 || m == 0 { return true }
        var uplo: CChar = CChar(UInt8(ascii: "L")), nn = Int32(n), lda = Int32(n), info: Int32 = 0
        return BLAS.withLibraryThreads {
            dpotrf_(&uplo, &nn, &a, &lda, &info)
            guard info == 0 else { return false }
            // Row-major R [m, n] is column-major Rᵀ [n, m]: A·Xᵀ = Rᵀ.
            var nrhs = Int32(m), ldb = Int32(n)
            dpotrs_(&uplo, &nn, &nrhs, &a, &lda, &r, &ldb, &info)
            return info == 0
        }
    }
}
