use cnn::cnn;

cnn! {
    pub struct Net {
        input(4, 16, 16)
        concat {
            branch {}
            branch {
                maxpool(2) conv(4 -> 8, k3, p1) relu
                concat { branch {} branch { maxpool(2) conv(8 -> 8, k3, p1) upsample(4) } }
                upsample(2)
            }
        }
    }
}

fn main() {}
