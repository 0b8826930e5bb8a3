"""The seed's PyTorch models and metric, verbatim in behaviour (../shared/seed, design.md section 2).

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
