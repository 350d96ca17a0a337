use cnn::cnn;

cnn! {
    pub struct Net {
        input(8, 4, 4)
        concat {} relu
    }
}

fn main() {}
