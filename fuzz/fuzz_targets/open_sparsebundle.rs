//! A sparse bundle folder made from the input: the bytes before the first NUL are its
//! Info.plist, the rest its band files, 4 KiB each, named 0, 2, 4, ... (every other band
//! missing), so missing, short and over-long bands all occur.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdmount::formats::Format;

fuzz_target!(|data: &[u8]| {
    let (plist, bands) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let folder = vdmount_fuzz::scratch_dir().join("fuzz.sparsebundle");
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(folder.join("bands")).expect("cannot create the bundle folder");
    std::fs::write(folder.join("Info.plist"), plist).expect("cannot write Info.plist");
    for (i, band) in bands.chunks(4096).take(16).enumerate() {
        std::fs::write(folder.join("bands").join(format!("{:x}", 2 * i)), band).expect("cannot write a band");
    }
    vdmount_fuzz::open_and_read_file(&folder, data, Some(Format::SparseBundle));
    let _ = std::fs::remove_dir_all(&folder);
});
