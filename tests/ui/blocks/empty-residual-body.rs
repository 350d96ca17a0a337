use cnn::cnn;

cnn! {
    pub struct Net {
        input(8, 4, 4)
        residual {} relu
    }
}

fn main() {}
