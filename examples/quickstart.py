"""The README quickstart, runnable: python examples/quickstart.py (tests/test_readme.py keeps the two in sync)."""

import lorun_peft
from lorun_peft.denoisers import UNet
from lorun_peft.operators import BlockCS

operator = BlockCS(ratio=0.25, block=16)                     # learnable sampling matrix
net = lorun_peft.unfold(UNet(1, width=8), operator, K=9, noise_level=True)  # frozen base + stage_0..8
x = lorun_peft.data.synthetic_images(16, size=32)           # your clean training images, N x C x H x W
lorun_peft.train(net, x, steps=20, batch_size=4)             # adapters + steps + operator only
x_hat, stages = net(operator(x[:2]), return_stages=True)     # restored images and the 9 stage outputs
print(net.parameter_report()); print(net.rank_table())
