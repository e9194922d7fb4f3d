/// Postgres array literals for binding a list to one `$n` parameter (`$1::text[]`), so lists never need
/// SQL built from strings.
public enum PostgresArray {
    /// `{"a","b"}` with `"` and `\` escaped; `nil` elements become NULL.
    public static func literal(_ values: [String?]) -> String {
        var out = "{"
        for (i, v) in values.enumerated() {
            if i > 0 { out += "," }
            guard let v else { out += "NULL"; continue }
            out += "\""
            for ch in v.unicodeScalars {
                if ch == "\"" || ch == "\\" { out += "\\" }
                out.unicodeScalars.append(ch)
            }
            out += "\""
        }
        return out + "}"
    }

    public static func literal(_ values: [Int64]) -> String {
        "{" + values.map(String.init).joined(separator: ",") + "}"
    }
}
