//! The "pause" image that holds an awsvpc task's network namespace: every
//! container of the task joins the pause container's namespace, so the
//! task keeps its address while its containers come and go.
//!
//! The image is generated here, with no registry: its only file is a tiny
//! static x86_64 ELF, emitted byte by byte, that loops on the `pause`
//! system call forever, packed into a `docker save` tarball that the
//! runtime loads.

use sha2::{Digest, Sha256};

use crate::{Runtime, RuntimeError};

/// The reference the agent runs pause containers from. The tag changes
/// whenever the image's content does.
pub const PAUSE_IMAGE: &str = "berth/pause:1";

/// Where the program lives in the image.
const PROGRAM_PATH: &str = "pause";

/// The virtual address the program is loaded at (the conventional base of
/// a non-PIE x86_64 executable).
const LOAD_ADDRESS: u64 = 0x40_0000;
const ELF_HEADER_SIZE: u16 = 64;
const PROGRAM_HEADER_SIZE: u16 = 56;

/// `loop: mov eax, 34 (SYS_pause); syscall; jmp loop`. `pause` returns
/// only when a signal handler ran; there are none, so a signal either
/// kills the process or is ignored (PID 1 ignores SIGTERM), and the loop
/// is a guard.
const X86_64_CODE: [u8; 9] = [
    0xb8, 0x22, 0x00, 0x00, 0x00, // mov eax, 34
    0x0f, 0x05, // syscall
    0xeb, 0xf7, // jmp -9 (back to mov)
];

/// The pause program for x86_64 Linux: one ELF header, one loadable
/// segment (read + execute) covering the whole file, and the code right
/// after the headers.
pub fn pause_elf_x86_64() -> Vec<u8> {
    let code_offset = u64::from(ELF_HEADER_SIZE) + u64::from(PROGRAM_HEADER_SIZE);
    let file_size = code_offset + X86_64_CODE.len() as u64;
    let mut elf = Vec::with_capacity(file_size as usize);
    // e_ident: magic, 64-bit, little-endian, version 1, System V ABI, padding.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&(LOAD_ADDRESS + code_offset).to_le_bytes()); // e_entry
    elf.extend_from_slice(&u64::from(ELF_HEADER_SIZE).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&ELF_HEADER_SIZE.to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&PROGRAM_HEADER_SIZE.to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
                                                // The program header: PT_LOAD, R+X, the whole file at LOAD_ADDRESS.
    elf.extend_from_slice(&1u32.to_le_bytes()); // p_type
    elf.extend_from_slice(&5u32.to_le_bytes()); // p_flags
    elf.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    elf.extend_from_slice(&LOAD_ADDRESS.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&LOAD_ADDRESS.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&file_size.to_le_bytes()); // p_filesz
    elf.extend_from_slice(&file_size.to_le_bytes()); // p_memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    elf.extend_from_slice(&X86_64_CODE);
    elf
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn append(
    archive: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    // A fixed time keeps the layer, and so the image id, reproducible.
    header.set_mtime(0);
    header.set_cksum();
    archive.append_data(&mut header, path, data)
}

/// The image as a `docker save` tarball: `manifest.json`, the image config
/// (named by its digest) and one layer holding the program.
pub fn image_tarball(tag: &str, program: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut layer = tar::Builder::new(Vec::new());
    append(&mut layer, PROGRAM_PATH, 0o755, program)?;
    let layer = layer.into_inner()?;
    let diff_id = sha256_hex(&layer);

    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": [format!("/{PROGRAM_PATH}")],
            "Labels": {"berth.image": "pause"},
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "berth (generated)"}],
    });
    let config = serde_json::to_vec(&config)?;
    let config_name = format!("{}.json", sha256_hex(&config));
    let layer_path = format!("{diff_id}/layer.tar");
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": [layer_path],
    }]))?;

    let mut image = tar::Builder::new(Vec::new());
    append(&mut image, &config_name, 0o644, &config)?;
    append(&mut image, &format!("{diff_id}/VERSION"), 0o644, b"1.0")?;
    append(&mut image, &layer_path, 0o644, &layer)?;
    append(&mut image, "manifest.json", 0o644, &manifest)?;
    image.into_inner()
}

/// Loads [`PAUSE_IMAGE`] into the runtime unless it is there already.
pub async fn ensure_pause_image(runtime: &dyn Runtime) -> Result<(), RuntimeError> {
    if runtime.image_present(PAUSE_IMAGE).await? {
        return Ok(());
    }
    if std::env::consts::ARCH != "x86_64" {
        return Err(RuntimeError::Other(format!(
            "the pause image is generated for x86_64 only, not {}",
            std::env::consts::ARCH
        )));
    }
    let tarball = image_tarball(PAUSE_IMAGE, &pause_elf_x86_64())
        .map_err(|e| RuntimeError::Other(format!("building {PAUSE_IMAGE}: {e}")))?;
    runtime.load_image(tarball).await?;
    tracing::info!(image = PAUSE_IMAGE, "loaded the generated pause image");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_headers_point_at_the_code() {
        let elf = pause_elf_x86_64();
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(elf.len(), 64 + 56 + X86_64_CODE.len());
        let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
        assert_eq!(entry, LOAD_ADDRESS + 120);
        assert_eq!(&elf[120..], &X86_64_CODE);
        let filesz = u64::from_le_bytes(elf[64 + 32..64 + 40].try_into().unwrap());
        assert_eq!(filesz, elf.len() as u64);
    }

    /// The program really runs and blocks (until killed).
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn program_blocks_until_killed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pause");
        std::fs::write(&path, pause_elf_x86_64()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = std::process::Command::new(&path).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(child.try_wait().unwrap().is_none(), "pause exited early");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn tarball_has_manifest_config_and_layer() {
        let tarball = image_tarball("x/pause:1", b"prog").unwrap();
        let mut archive = tar::Archive::new(tarball.as_slice());
        let mut names = Vec::new();
        let mut manifest = None;
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            if name == "manifest.json" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
                manifest = Some(serde_json::from_str::<serde_json::Value>(&text).unwrap());
            }
            names.push(name);
        }
        let manifest = manifest.unwrap();
        assert_eq!(manifest[0]["RepoTags"][0], "x/pause:1");
        let config = manifest[0]["Config"].as_str().unwrap();
        let layer = manifest[0]["Layers"][0].as_str().unwrap();
        assert!(names.iter().any(|n| n == config));
        assert!(names.iter().any(|n| n == layer));
    }
}
