//! Image-folder trees: `train/<class>/<images>` and `test/<class>/<images>`, JPEG or PNG, in a
//! folder or streamed from a `.tar.gz`, optionally under one top-level folder.
//!
//! Class order is the sorted train class-folder names, unless a `classes.txt` (one name a line)
//! sits beside `train/`. Hidden files and folders are skipped, and so are files that are neither
//! JPEG/PNG by content nor by extension. Images are converted to RGB and stored CHW, in sorted
//! path order within each class.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::ImageFormat;

use super::error::{DataError, IoContext};
use super::{entry_components, open_tar_gz, read_input, single_subdir, Dataset, ImageShape, Split};

const SPLITS: [&str; 2] = ["train", "test"];
const CLASSES_FILE: &str = "classes.txt";
/// Decoding threads at most: loading runs once per cache, so more cores would buy little.
const MAX_THREADS: usize = 8;

/// The tree root (the folder holding `train/` and `test/`), given it or a folder around it.
pub fn find_root(path: &Path) -> Option<PathBuf> {
    let has_split = |p: &Path| SPLITS.iter().any(|s| p.join(s).is_dir());
    if has_split(path) {
        return Some(path.to_path_buf());
    }
    single_subdir(path).filter(|p| has_split(p))
}

/// Where an archive member sits: the depth of the tree root (0, or 1 under a top-level folder)
/// and the split index, for any non-hidden path that starts a split there.
fn locate(comps: &[String]) -> Option<(usize, usize)> {
    if comps.iter().any(|c| is_hidden(c)) {
        return None;
    }
    (0..2).find_map(|depth| {
        let name = comps.get(depth)?.as_str();
        Some((depth, SPLITS.iter().position(|s| *s == name)?))
    })
}

/// For `DataSource::detect`: the split an archive file member belongs to, if it is an image
/// candidate inside a class folder.
pub fn split_of_entry(comps: &[String]) -> Option<&'static str> {
    let (depth, split) = locate(comps)?;
    (comps.len() >= depth + 3).then_some(SPLITS[split])
}

/// One file found in a class folder, before decoding.
struct Item {
    split: usize,
    class: String,
    /// Path inside the class folder, '/'-separated; the sort key within a class.
    rel: String,
    /// The file (or archive member, for errors).
    path: PathBuf,
    /// None: a folder's file named .jpg/.jpeg/.png, read by the decoding thread.
    bytes: Option<Vec<u8>>,
}

/// What a tree holds, read from a folder or an archive.
struct Tree {
    root: PathBuf,
    items: Vec<Item>,
    /// (split, class) of every class folder seen, empty ones included.
    class_dirs: BTreeSet<(usize, String)>,
    classes_txt: Option<(PathBuf, String)>,
}

/// Loads an image-folder tree; `image_size` resizes every image to that square size, otherwise
/// all images must have the size of the first.
pub fn load(path: &Path, image_size: Option<usize>) -> Result<Dataset, DataError> {
    let tree = if path.is_dir() {
        read_dir_tree(path)?
    } else {
        read_archive_tree(path)?
    };
    // A folder is named by its tree root, an archive by its file name.
    let name = dataset_name(if path.is_dir() { &tree.root } else { path });
    build(tree, image_size, name)
}

fn dataset_name(path: &Path) -> String {
    // "." has no file name; its canonical form does.
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "images".into());
    let lower = name.to_ascii_lowercase();
    [".tar.gz", ".tgz"]
        .iter()
        .find(|ext| lower.ends_with(*ext))
        .map_or(name.clone(), |ext| {
            name[..name.len() - ext.len()].to_string()
        })
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// JPEG or PNG by content, or claims to be by extension (and then must decode).
fn is_candidate(rel: &str, bytes: &[u8]) -> bool {
    matches!(
        image::guess_format(bytes),
        Ok(ImageFormat::Jpeg | ImageFormat::Png)
    ) || format_from_extension(rel).is_some()
}

fn format_from_extension(name: &str) -> Option<ImageFormat> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => Some(ImageFormat::Jpeg),
        "png" => Some(ImageFormat::Png),
        _ => None,
    }
}

fn read_dir_tree(path: &Path) -> Result<Tree, DataError> {
    let root = find_root(path).ok_or_else(|| DataError::MissingSplit {
        path: path.to_path_buf(),
        split: "train",
    })?;
    let mut tree = Tree {
        root: root.clone(),
        items: Vec::new(),
        class_dirs: BTreeSet::new(),
        classes_txt: None,
    };
    let txt = root.join(CLASSES_FILE);
    // `exists`, not `is_file`: a classes.txt that is a folder is an error, not ignored.
    if txt.exists() {
        let bytes = read_input(&txt)?;
        let text = String::from_utf8(bytes).map_err(|_| DataError::Format {
            path: txt.clone(),
            message: "is not UTF-8 text".into(),
        })?;
        tree.classes_txt = Some((txt, text));
    }
    for (split, split_name) in SPLITS.iter().enumerate() {
        let dir = root.join(split_name);
        if !dir.is_dir() {
            continue;
        }
        for (class_dir, is_dir) in sorted_entries(&dir)? {
            if !is_dir {
                continue;
            }
            let class = file_name(&class_dir);
            tree.class_dirs.insert((split, class.clone()));
            collect_files(&class_dir, "", &mut |rel, p| {
                // Sniff only files whose name does not already say JPEG/PNG.
                let bytes = match format_from_extension(rel) {
                    Some(_) => None,
                    None => Some(read_input(p)?),
                };
                if bytes.as_ref().is_none_or(|b| is_candidate(rel, b)) {
                    tree.items.push(Item {
                        split,
                        class: class.clone(),
                        rel: rel.to_string(),
                        path: p.to_path_buf(),
                        bytes,
                    });
                }
                Ok(())
            })?;
        }
    }
    Ok(tree)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Non-hidden entries of a folder that are folders or files (links followed), with is-folder.
fn sorted_entries(dir: &Path) -> Result<Vec<(PathBuf, bool)>, DataError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        if is_hidden(&e.file_name().to_string_lossy()) {
            continue;
        }
        // The entry's own type avoids a stat per file; only links need one.
        let mut ty = e.file_type().at(e.path())?;
        if ty.is_symlink() {
            ty = std::fs::metadata(e.path()).at(e.path())?.file_type();
        }
        if ty.is_dir() || ty.is_file() {
            out.push((e.path(), ty.is_dir()));
        }
    }
    out.sort();
    Ok(out)
}

/// Visits every non-hidden file below `dir` with its '/'-separated path relative to the class.
fn collect_files(
    dir: &Path,
    prefix: &str,
    visit: &mut dyn FnMut(&str, &Path) -> Result<(), DataError>,
) -> Result<(), DataError> {
    for (p, is_dir) in sorted_entries(dir)? {
        let rel = format!("{prefix}{}", file_name(&p));
        if is_dir {
            collect_files(&p, &format!("{rel}/"), visit)?;
        } else {
            visit(&rel, &p)?;
        }
    }
    Ok(())
}

fn read_archive_tree(archive: &Path) -> Result<Tree, DataError> {
    let mut tree = Tree {
        root: archive.to_path_buf(),
        items: Vec::new(),
        class_dirs: BTreeSet::new(),
        classes_txt: None,
    };
    // The first image fixes where the root is; classes.txt may come before it.
    let mut prefix: Option<Vec<String>> = None;
    let mut classes_txts: HashMap<Vec<String>, (PathBuf, String)> = HashMap::new();
    let mut dirs: Vec<(Vec<String>, usize, String)> = Vec::new();
    let mut tar = open_tar_gz(archive)?;
    for entry in tar.entries().at(archive)? {
        let mut entry = entry.at(archive)?;
        let kind = entry.header().entry_type();
        if !kind.is_file() && !kind.is_dir() {
            continue;
        }
        let comps = entry_components(&entry, archive)?;
        let member = archive.join(comps.join("/"));
        if kind.is_file()
            && comps.len() <= 2
            && comps.last().map(String::as_str) == Some(CLASSES_FILE)
        {
            let mut text = String::new();
            entry.read_to_string(&mut text).at(&member)?;
            classes_txts.insert(comps[..comps.len() - 1].to_vec(), (member, text));
            continue;
        }
        let Some((depth, split)) = locate(&comps) else {
            continue;
        };
        if kind.is_dir() {
            if comps.len() == depth + 2 {
                dirs.push((comps[..depth].to_vec(), split, comps[depth + 1].clone()));
            }
            continue;
        }
        if comps.len() < depth + 3 {
            continue;
        }
        let here = &comps[..depth];
        match &prefix {
            Some(p) if p.as_slice() != here => continue,
            Some(_) => {}
            None => prefix = Some(here.to_vec()),
        }
        let rel = comps[depth + 2..].join("/");
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).at(&member)?;
        if !is_candidate(&rel, &bytes) {
            continue;
        }
        let class = comps[depth + 1].clone();
        tree.class_dirs.insert((split, class.clone()));
        tree.items.push(Item {
            split,
            class,
            rel,
            path: member,
            bytes: Some(bytes),
        });
    }
    let prefix = prefix.unwrap_or_default();
    for (p, split, class) in dirs {
        if p == prefix {
            tree.class_dirs.insert((split, class));
        }
    }
    tree.classes_txt = classes_txts.remove(&prefix);
    if !prefix.is_empty() {
        tree.root = archive.join(prefix.join("/"));
    }
    Ok(tree)
}

fn build(tree: Tree, image_size: Option<usize>, name: String) -> Result<Dataset, DataError> {
    let Tree {
        root,
        items,
        class_dirs,
        classes_txt,
    } = tree;
    for (split, split_name) in SPLITS.iter().enumerate() {
        if !class_dirs.iter().any(|(s, _)| *s == split) {
            return Err(DataError::MissingSplit {
                path: root.clone(),
                split: split_name,
            });
        }
    }
    let train_classes: Vec<String> = class_dirs
        .iter()
        .filter(|(s, _)| *s == 0)
        .map(|(_, c)| c.clone())
        .collect();
    let classes = match &classes_txt {
        None => train_classes.clone(),
        Some((path, text)) => {
            let listed = parse_classes(path, text)?;
            if let Some(c) = train_classes.iter().find(|c| !listed.contains(c)) {
                return Err(DataError::Format {
                    path: path.clone(),
                    message: format!("does not list class '{c}', which train/ has"),
                });
            }
            if let Some(c) = listed.iter().find(|c| !train_classes.contains(c)) {
                return Err(DataError::EmptyClass {
                    path: root.join("train").join(c),
                });
            }
            listed
        }
    };
    if classes.len() > u16::MAX as usize + 1 {
        return Err(DataError::Format {
            path: root.clone(),
            message: format!("{} classes; at most 65536 are supported", classes.len()),
        });
    }
    let label_of: HashMap<&str, u16> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u16))
        .collect();
    let non_empty: std::collections::HashSet<(usize, &str)> = items
        .iter()
        .map(|it| (it.split, it.class.as_str()))
        .collect();
    for (split, class) in &class_dirs {
        if !label_of.contains_key(class.as_str()) {
            return Err(DataError::Format {
                path: root.join(SPLITS[*split]).join(class),
                message: "test/ has a class that train/ does not (the splits must share classes)"
                    .into(),
            });
        }
        if !non_empty.contains(&(*split, class.as_str())) {
            return Err(DataError::EmptyClass {
                path: root.join(SPLITS[*split]).join(class),
            });
        }
    }
    let mut keyed: Vec<(usize, u16, Item)> = items
        .into_iter()
        .map(|it| (it.split, label_of[it.class.as_str()], it))
        .collect();
    keyed.sort_by(|a, b| (a.0, a.1, &a.2.rel).cmp(&(b.0, b.1, &b.2.rel)));
    let labels: Vec<u16> = keyed.iter().map(|k| k.1).collect();
    let items: Vec<Item> = keyed.into_iter().map(|k| k.2).collect();
    let n_train = items.iter().take_while(|it| it.split == 0).count();
    let (shape, mut images) = decode_all(&items, image_size)?;
    let test_images = images.split_off(n_train * shape.numel());
    Ok(Dataset {
        name,
        classes,
        shape,
        train: Split {
            images,
            labels: labels[..n_train].to_vec(),
        },
        test: Split {
            images: test_images,
            labels: labels[n_train..].to_vec(),
        },
    })
}

fn parse_classes(path: &Path, text: &str) -> Result<Vec<String>, DataError> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if out.iter().any(|c| c == line) {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                message: format!("lists class '{line}' twice"),
            });
        }
        out.push(line.to_string());
    }
    Ok(out)
}

/// Decodes every item into one CHW buffer, in item order, on up to `MAX_THREADS` threads.
fn decode_all(
    items: &[Item],
    image_size: Option<usize>,
) -> Result<(ImageShape, Vec<u8>), DataError> {
    let (w, h) = match image_size {
        Some(s) => (s as u32, s as u32),
        None => decode(&items[0], None)?.dimensions(),
    };
    let shape = ImageShape {
        channels: 3,
        height: h as usize,
        width: w as usize,
    };
    let n = shape.numel();
    let mut out = vec![0u8; items.len() * n];
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .clamp(1, MAX_THREADS)
        .min(items.len());
    let per = items.len().div_ceil(threads);
    // Each chunk stops at its own first error; the earliest chunk's is the first overall.
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(per)
            .zip(out.chunks_mut(per * n))
            .map(|(chunk, dst)| {
                s.spawn(move || -> Result<(), DataError> {
                    for (item, dst) in chunk.iter().zip(dst.chunks_exact_mut(n)) {
                        let img = decode(item, image_size)?;
                        if img.dimensions() != (w, h) {
                            return Err(DataError::InconsistentSize {
                                path: item.path.clone(),
                                expected: (w, h),
                                got: img.dimensions(),
                            });
                        }
                        hwc_to_chw(img.as_raw(), dst);
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("decoder thread panicked"))
            .collect::<Result<Vec<()>, DataError>>()
    })?;
    Ok((shape, out))
}

fn decode(item: &Item, image_size: Option<usize>) -> Result<image::RgbImage, DataError> {
    let read;
    let bytes = match &item.bytes {
        Some(b) => b,
        None => {
            read = read_input(&item.path)?;
            &read
        }
    };
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Jpeg | ImageFormat::Png)) => f,
        _ => format_from_extension(&item.rel).unwrap_or(ImageFormat::Png),
    };
    let img = image::load_from_memory_with_format(bytes, format)
        .map_err(|e| DataError::Decode {
            path: item.path.clone(),
            message: e.to_string(),
        })?
        .into_rgb8();
    Ok(match image_size {
        Some(s) if img.dimensions() != (s as u32, s as u32) => {
            image::imageops::resize(&img, s as u32, s as u32, FilterType::Triangle)
        }
        _ => img,
    })
}

fn hwc_to_chw(src: &[u8], dst: &mut [u8]) {
    let plane = dst.len() / 3;
    let (r, rest) = dst.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in src.chunks_exact(3).enumerate() {
        r[i] = px[0];
        g[i] = px[1];
        b[i] = px[2];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cifar_binary::tests::tar_gz;
    use crate::data::DataSource;
    use image::{GrayImage, Luma, Rgb, RgbImage};
    use std::fs;

    fn png(path: &Path, w: u32, h: u32, seed: u8) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([
                seed,
                (x as u8).wrapping_mul(9),
                (y as u8).wrapping_add(seed),
            ])
        })
        .save_with_format(path, ImageFormat::Png)
        .unwrap();
    }

    /// train/{cat,dog} + test/{cat,dog}, 4x4 PNGs, plus files that must be skipped.
    fn write_tree(root: &Path) {
        png(&root.join("train/dog/b.png"), 4, 4, 1);
        png(&root.join("train/dog/a.png"), 4, 4, 2);
        png(&root.join("train/cat/x.png"), 4, 4, 3);
        png(&root.join("test/cat/y.png"), 4, 4, 4);
        png(&root.join("test/dog/z.png"), 4, 4, 5);
        fs::write(root.join("train/dog/.DS_Store"), b"junk").unwrap();
        fs::write(root.join("train/dog/._a.png"), b"junk").unwrap();
        fs::write(root.join("train/cat/notes.txt"), b"not an image").unwrap();
        png(&root.join("train/.hidden_class/q.png"), 4, 4, 6);
    }

    #[test]
    fn folder_and_archive_under_a_top_level_folder_agree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("src/pets");
        write_tree(&root);
        let archive = tmp.path().join("pets.tar.gz");
        tar_gz(&tmp.path().join("src"), &archive);

        let a = load(&root, None).unwrap();
        let b = load(&tmp.path().join("src"), None).unwrap();
        let mut c = load(&archive, None).unwrap();
        assert_eq!(a, b);
        c.name = a.name.clone();
        assert_eq!(a, c);
        assert_eq!(a.classes, vec!["cat", "dog"]);
        assert_eq!(a.train.labels, vec![0, 1, 1]);
        assert_eq!(a.test.labels, vec![0, 1]);
        assert_eq!(
            a.shape,
            ImageShape {
                channels: 3,
                height: 4,
                width: 4
            }
        );
        // train/dog/a.png (seed 2) sorts before b.png; planes are R, G, B.
        let img = a.train.image(1, &a.shape);
        assert!(img[..16].iter().all(|&p| p == 2));
        assert_eq!(img[16 + 4 + 3], 27); // G at (x=3, y=1)
        assert_eq!(img[32 + 4 * 2], 4); // B at (x=0, y=2)
        assert_eq!(load(&archive, None).unwrap().name, "pets");

        for p in [&root, &tmp.path().join("src"), &archive] {
            let s = DataSource::detect(p.to_str().unwrap()).unwrap();
            assert!(matches!(s, DataSource::ImageFolder { .. }), "{s:?}");
        }
    }

    #[test]
    fn classes_txt_sets_the_order_and_test_must_share_classes() {
        let tmp = tempfile::tempdir().unwrap();
        write_tree(tmp.path());
        fs::write(tmp.path().join("classes.txt"), "dog\ncat\n").unwrap();
        let a = load(tmp.path(), None).unwrap();
        assert_eq!(a.classes, vec!["dog", "cat"]);
        assert_eq!(a.train.labels, vec![0, 0, 1]);
        let archive = tmp.path().with_extension("tgz");
        tar_gz(tmp.path(), &archive);
        assert_eq!(load(&archive, None).unwrap().classes, vec!["dog", "cat"]);

        png(&tmp.path().join("test/bird/w.png"), 4, 4, 7);
        let e = load(tmp.path(), None).unwrap_err();
        assert!(e.to_string().contains("test/bird"), "{e}");
        fs::remove_dir_all(tmp.path().join("test/bird")).unwrap();
        fs::write(tmp.path().join("classes.txt"), "dog\n").unwrap();
        let e = load(tmp.path(), None).unwrap_err();
        assert!(e.to_string().contains("'cat'"), "{e}");
    }

    #[test]
    fn structural_errors_name_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        write_tree(tmp.path());
        fs::create_dir_all(tmp.path().join("test/cat/sub")).unwrap();
        fs::remove_file(tmp.path().join("test/cat/y.png")).unwrap();
        match load(tmp.path(), None).unwrap_err() {
            DataError::EmptyClass { path } => assert!(path.ends_with("test/cat")),
            e => panic!("{e}"),
        }
        fs::remove_dir_all(tmp.path().join("test")).unwrap();
        let e = load(tmp.path(), None).unwrap_err();
        assert!(
            matches!(e, DataError::MissingSplit { split: "test", .. }),
            "{e}"
        );
        let archive = tmp.path().with_extension("tgz");
        tar_gz(tmp.path(), &archive);
        let e = load(&archive, None).unwrap_err();
        assert!(
            matches!(e, DataError::MissingSplit { split: "test", .. }),
            "{e}"
        );
    }

    #[test]
    fn a_classes_txt_that_is_a_directory_is_not_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        write_tree(tmp.path());
        let txt = tmp.path().join("classes.txt");
        fs::create_dir(&txt).unwrap();
        let e = load(tmp.path(), None).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "cannot read {}: it is a directory, not a file",
                txt.display()
            )
        );
    }

    #[test]
    fn bad_and_odd_sized_images() {
        let tmp = tempfile::tempdir().unwrap();
        write_tree(tmp.path());
        png(&tmp.path().join("train/cat/z_big.png"), 6, 5, 9);
        match load(tmp.path(), None).unwrap_err() {
            DataError::InconsistentSize {
                path,
                expected,
                got,
            } => {
                assert!(path.ends_with("train/cat/z_big.png"));
                assert_eq!((expected, got), ((4, 4), (6, 5)));
            }
            e => panic!("{e}"),
        }
        let a = load(tmp.path(), Some(3)).unwrap();
        assert_eq!(
            a.shape,
            ImageShape {
                channels: 3,
                height: 3,
                width: 3
            }
        );
        assert_eq!(a.train.images.len(), 4 * 27);

        fs::write(
            tmp.path().join("train/cat/broken.jpg"),
            b"\xff\xd8\xff\xe0 nope",
        )
        .unwrap();
        match load(tmp.path(), Some(3)).unwrap_err() {
            DataError::Decode { path, message } => {
                assert!(path.ends_with("train/cat/broken.jpg"));
                assert!(!message.is_empty());
            }
            e => panic!("{e}"),
        }
    }

    /// The shared CIFAR-10 JPEG archive, when `CPTLAB_TEST_CIFAR10` points at it (make test
    /// sets it); skipped otherwise.
    #[test]
    fn real_cifar10_jpeg_archive_loads() {
        let Ok(path) = std::env::var("CPTLAB_TEST_CIFAR10") else {
            return;
        };
        let ds = load(Path::new(&path), None).unwrap();
        assert_eq!((ds.train.len(), ds.test.len()), (50_000, 10_000));
        assert_eq!(
            ds.shape,
            ImageShape {
                channels: 3,
                height: 32,
                width: 32
            }
        );
        assert_eq!(ds.classes[0], "airplane");
        assert_eq!(ds.classes[9], "truck");
        let mut counts = [0; 10];
        ds.test.labels.iter().for_each(|&l| counts[l as usize] += 1);
        assert_eq!(counts, [1000; 10]);
        // Channel means near CIFAR-10's (125.3, 123.0, 113.9): RGB planes in order.
        let plane = 32 * 32;
        for (c, want) in [125.3, 123.0, 113.9].into_iter().enumerate() {
            let sum: u64 = (0..ds.train.len())
                .flat_map(|i| &ds.train.image(i, &ds.shape)[c * plane..(c + 1) * plane])
                .map(|&p| p as u64)
                .sum();
            let mean = sum as f64 / (ds.train.len() * plane) as f64;
            assert!((mean - want).abs() < 2.0, "channel {c} mean {mean}");
        }
    }

    #[test]
    fn grayscale_png_and_jpeg_become_rgb() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for split in ["train", "test"] {
            let p = root.join(split).join("a/g.png");
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            GrayImage::from_pixel(8, 8, Luma([77])).save(&p).unwrap();
            // JPEG content behind a misleading extension: decided by content.
            RgbImage::from_pixel(8, 8, Rgb([200, 40, 90]))
                .save_with_format(root.join(split).join("a/j.dat"), ImageFormat::Jpeg)
                .unwrap();
        }
        let a = load(root, None).unwrap();
        assert_eq!(a.train.len(), 2);
        assert!(a.train.image(0, &a.shape).iter().all(|&p| p == 77));
        let j = a.train.image(1, &a.shape);
        let near = |v: u8, t: u8| (v as i32 - t as i32).abs() <= 6;
        assert!(
            near(j[0], 200) && near(j[64], 40) && near(j[128], 90),
            "{:?}",
            &j[..3]
        );
    }
}
