#include "storage/key_lock_table.h"

namespace engram::storage {

KeyLockTable::Guard::Guard(KeyLockTable* table, std::vector<std::string> keys)
    : table_(table), keys_(std::move(keys)) {
  absl::MutexLock lock(&table_->mutex_);
  auto none_held = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(table_->mutex_) {
    for (const std::string& key : keys_) {
      if (table_->held_.contains(key)) return false;
    }
    return true;
  };
  table_->mutex_.Await(absl::Condition(&none_held));
  // A key listed twice is held once.
  for (const std::string& key : keys_) table_->held_.insert(key);
}

KeyLockTable::Guard::~Guard() {
  absl::MutexLock lock(&table_->mutex_);
  for (const std::string& key : keys_) table_->held_.erase(key);
}

}  // namespace engram::storage
