use cnn::cnn;

cnn! {
    /// Every bad argument in a network is reported in one compile.
    struct BadArgs {
        input(3, 32, 32)
        conv(3 -> 16, k3, strid=2) bn(eps=-1.0) maxpol(2) dropout(2.0)
    }

    /// Networks are checked independently: this one has a shape error.
    struct BadShape {
        input(3, 32, 32)
        conv(3 -> 16, k3) conv(8 -> 8, k3)
    }

    /// And this one is fine.
    struct Fine {
        input(1, 8, 8)
        conv(1 -> 4, k3) relu gap fc(2)
    }
}

fn main() {}
