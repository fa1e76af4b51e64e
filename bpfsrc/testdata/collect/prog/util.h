#pragma once
#define UTIL 1
