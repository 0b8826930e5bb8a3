"""The seed's PyTorch models and metric, verbatim in behaviour (docs/design.md, section 1).

Used only by the scripts in tools/ that make fixtures and reference runs; CI never imports torch.
"""
import numpy as np
import torch
import torch.nn.functional as F


def conv3x3_bn(ci, co):
    return torch.nn.Sequential(
        torch.nn.Conv2d(ci, co, 3, padding=1),
        torch.nn.BatchNorm2d(co),
        torch.nn.ReLU(inplace=True),
    )


def encoder_conv(ci, co):
    return torch.nn.Sequential(
        torch.nn.MaxPool2d(2),
        conv3x3_bn(ci, co),
        conv3x3_bn(co, co),
    )


class deconv(torch.nn.Module):
    def __init__(self, ci, co):
        super().__init__()
        self.upsample = torch.nn.ConvTranspose2d(ci, co, 2, stride=2)
        self.conv1 = conv3x3_bn(ci, co)
        self.conv2 = conv3x3_bn(co, co)

    def forward(self, x1, x2):
        x1 = self.upsample(x1)
        diffX = x2.size()[2] - x1.size()[2]
        diffY = x2.size()[3] - x1.size()[3]
        x1 = F.pad(x1, (diffX, 0, diffY, 0))
        x = torch.cat([x2, x1], dim=1)
        x = self.conv1(x)
        x = self.conv2(x)
        return x


class UNet(torch.nn.Module):
    def __init__(self, n_classes=3, in_ch=1):
        super().__init__()
        c = [16, 32, 64, 128]
        self.conv1 = torch.nn.Sequential(
            conv3x3_bn(in_ch, c[0]),
            conv3x3_bn(c[0], c[0]),
        )
        self.conv2 = encoder_conv(c[0], c[1])
        self.conv3 = encoder_conv(c[1], c[2])
        self.conv4 = encoder_conv(c[2], c[3])
        self.deconv1 = deconv(c[3], c[2])
        self.deconv2 = deconv(c[2], c[1])
        self.deconv3 = deconv(c[1], c[0])
        self.out = torch.nn.Conv2d(c[0], n_classes, 3, padding=1)

    def forward(self, x):
        x1 = self.conv1(x)
        x2 = self.conv2(x1)
        x3 = self.conv3(x2)
        x = self.conv4(x3)
        x = self.deconv1(x, x3)
        x = self.deconv2(x, x2)
        x = self.deconv3(x, x1)
        x = self.out(x)
        return x


def iou(outputs, labels):
    """The seed's metric: per image and class (background skipped), then the mean."""
    outputs, labels = torch.sigmoid(outputs) > 0.5, labels > 0.5
    SMOOTH = 1e-6
    B, N, H, W = outputs.shape
    ious = []
    for i in range(N - 1):
        _out, _labs = outputs[:, i, :, :], labels[:, i, :, :]
        intersection = (_out & _labs).float().sum((1, 2))
        union = (_out | _labs).float().sum((1, 2))
        ious.append(((intersection + SMOOTH) / (union + SMOOTH)).cpu().numpy())
    return np.mean(ious)


def one_hot(mask, n_classes=3):
    """H x W uint8 mask -> n_classes x H x W float32, as the seed's Dataset."""
    return torch.from_numpy((np.arange(n_classes) == mask[..., None]).astype(np.float32)).permute(2, 0, 1)


# ---------------------------------------------------------------------------------------------
# The seed's transfer-learning model (docs/design.md, section 1): UNet with a ResNet-18 encoder.

class out_conv(torch.nn.Module):
    def __init__(self, ci, co, coo):
        super().__init__()
        self.upsample = torch.nn.ConvTranspose2d(ci, co, 2, stride=2)
        self.conv = conv3x3_bn(ci, co)
        self.final = torch.nn.Conv2d(co, coo, 1)

    def forward(self, x1, x2):
        x1 = self.upsample(x1)
        diffX = x2.size()[2] - x1.size()[2]
        diffY = x2.size()[3] - x1.size()[3]
        x1 = F.pad(x1, (diffX, 0, diffY, 0))
        x = self.conv(x1)
        x = self.final(x)
        return x


class BasicBlock(torch.nn.Module):
    """torchvision's BasicBlock, with its module names."""

    def __init__(self, ci, co, stride):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(ci, co, 3, stride=stride, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(co)
        self.relu = torch.nn.ReLU(inplace=True)
        self.conv2 = torch.nn.Conv2d(co, co, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(co)
        self.downsample = None
        if stride != 1 or ci != co:
            self.downsample = torch.nn.Sequential(torch.nn.Conv2d(ci, co, 1, stride=stride, bias=False),
                                                  torch.nn.BatchNorm2d(co))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(torch.nn.Module):
    """torchvision.models.resnet18's modules, names and initialization, with a configurable base
    width (64 is torchvision's) so that test fixtures stay small. tools/make_fixtures.py checks
    that width 64 has torchvision's exact state_dict and forward."""

    def __init__(self, width=64, num_classes=1000):
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = torch.nn.Conv2d(3, w[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(w[0])
        self.relu = torch.nn.ReLU(inplace=True)
        self.maxpool = torch.nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = torch.nn.Sequential(BasicBlock(w[0], w[0], 1), BasicBlock(w[0], w[0], 1))
        self.layer2 = torch.nn.Sequential(BasicBlock(w[0], w[1], 2), BasicBlock(w[1], w[1], 1))
        self.layer3 = torch.nn.Sequential(BasicBlock(w[1], w[2], 2), BasicBlock(w[2], w[2], 1))
        self.layer4 = torch.nn.Sequential(BasicBlock(w[2], w[3], 2), BasicBlock(w[3], w[3], 1))
        self.avgpool = torch.nn.AdaptiveAvgPool2d((1, 1))
        self.fc = torch.nn.Linear(w[3], num_classes)
        for m in self.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, torch.nn.BatchNorm2d):
                torch.nn.init.constant_(m.weight, 1)
                torch.nn.init.constant_(m.bias, 0)


class UNetResnet(torch.nn.Module):
    """The seed's UNetResnet. `encoder` defaults to ResNet18(width); the seed's own is
    torchvision.models.resnet18(pretrained=True)."""

    def __init__(self, n_classes=3, in_ch=1, width=64, encoder=None):
        super().__init__()
        self.encoder = encoder if encoder is not None else ResNet18(width)
        if in_ch != 3:
            self.encoder.conv1 = torch.nn.Conv2d(in_ch, width, kernel_size=7, stride=2, padding=3, bias=False)
        w = width
        self.deconv1 = deconv(8 * w, 4 * w)
        self.deconv2 = deconv(4 * w, 2 * w)
        self.deconv3 = deconv(2 * w, w)
        self.out = out_conv(w, w, n_classes)

    def forward(self, x):
        x_in = x
        x = self.encoder.relu(self.encoder.bn1(self.encoder.conv1(x)))
        x1 = self.encoder.layer1(x)
        x2 = self.encoder.layer2(x1)
        x3 = self.encoder.layer3(x2)
        x = self.encoder.layer4(x3)
        x = self.deconv1(x, x3)
        x = self.deconv2(x, x2)
        x = self.deconv3(x, x1)
        x = self.out(x, x_in)
        return x
