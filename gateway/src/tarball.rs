//! Tar archives as they are streamed to Docker (a build context, an image to `docker load`):
//! ustar headers, entries from bytes or from a file read as it is sent, and the archive's end.

use axum::body::Bytes;
use futures::StreamExt;

/// A tar archive (or a part of one) as it is streamed.
pub type Archive = futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Zero bytes after an entry of `len` bytes, up to its 512-byte block.
pub fn padding(len: u64) -> usize {
    ((512 - len % 512) % 512) as usize
}

/// A ustar header for a regular file.
pub fn header(name: &str, size: u64, mode: u32) -> std::io::Result<Vec<u8>> {
    if name.len() > 99 || size >= 8 << 30 {
        return Err(std::io::Error::other(format!("{name} does not fit a tar header")));
    }
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8], at: usize, width: usize, value: u64| {
        let text = format!("{value:0w$o}", w = width - 1);
        h[at..at + width - 1].copy_from_slice(text.as_bytes());
    };
    octal(&mut h, 100, 8, u64::from(mode));
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, size);
    octal(&mut h, 136, 12, 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
    Ok(h)
}

/// A whole entry holding `content`.
pub fn entry(name: &str, content: &[u8], mode: u32) -> std::io::Result<Vec<u8>> {
    let mut out = header(name, content.len() as u64, mode)?;
    out.extend_from_slice(content);
    out.resize(out.len() + padding(content.len() as u64), 0);
    Ok(out)
}

/// An entry holding the `len` bytes of the file at `path`, read as it is sent.
pub async fn file_entry(name: &str, path: &std::path::Path, len: u64, mode: u32) -> std::io::Result<Archive> {
    let head = header(name, len, mode)?;
    let file = tokio::fs::File::open(path).await?;
    Ok(futures::stream::once(async move { Ok(Bytes::from(head)) })
        .chain(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20))
        .chain(futures::stream::once(async move { Ok(Bytes::from(vec![0u8; padding(len)])) }))
        .boxed())
}

/// Two empty blocks end an archive.
pub const END: [u8; 1024] = [0u8; 1024];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_ustar_with_a_valid_checksum() {
        let h = header("Dockerfile", 1234, 0o644).unwrap();
        assert_eq!(&h[257..262], b"ustar");
        assert_eq!(&h[124..135], b"00000002322");
        let stored = u64::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut blank = h.clone();
        blank[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, blank.iter().map(|&b| u64::from(b)).sum::<u64>());
        assert_eq!(padding(512), 0);
        assert_eq!(padding(513), 511);
        assert_eq!(entry("a", b"xyz", 0o644).unwrap().len(), 1024);
        assert!(header(&"n".repeat(100), 1, 0o644).is_err());
    }
}
