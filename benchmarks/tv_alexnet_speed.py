"""torchvision's AlexNet training speed on this machine's CPU (batch 32, 224 px, SGD): the figure
issue 15 uses to tell machines apart (47.8 images/s on a fast 2-core machine, 12.3 on a slow one).
benchmarks/slow_quickstart.sh prints it inside its CPU cap to calibrate the cap.

    python benchmarks/tv_alexnet_speed.py [--steps 6]
"""

import argparse
import time

import torch
import torchvision


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6)
    a = p.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.alexnet()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(32, 3, 224, 224), torch.randint(0, 1000, (32,))

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(2):  # warm-up
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = time.perf_counter() - t0
    print(f"torchvision AlexNet, batch 32, 224 px, {torch.get_num_threads()} threads: "
          f"{a.steps * 32 / dt:.1f} images/s")


if __name__ == "__main__":
    main()
