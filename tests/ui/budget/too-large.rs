use cnn::cnn;

cnn! {
    /// The input fits in `usize`, but not the two activation buffers of the workspace.
    struct Net {
        input(1, 1, 9223372036854775808)
        relu
    }
}

fn main() {}
